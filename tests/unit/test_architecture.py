"""The shape of daemon/, checked from outside: the source is read and parsed, never
imported, so a broken or heavy module cannot hide a violation.

- the import rules of ARCHITECTURE.md's table "Rooms and what each may import": every
  module lies in exactly one room and imports (at run time: module level or inside a
  function, not under `if TYPE_CHECKING:`) only the foundation, its own room and the
  rooms its row names;
- third-party libraries kept in their rooms (the "Only `store` imports `sqlalchemy`"
  sentences under the table);
- no module over MAX_LINES lines;
- no import cycle among daemon's modules when they are imported;
- one module publishes a job's outputs and records its result (the one-shot
  `spkd transcribe`, which has no job, aside);
- the map is in the repository: ARCHITECTURE.md names every room, the documents name
  only files that exist, and README.md links to nothing outside the repository.

Each failure lists every offence with file:line, so one run shows all that is left.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "daemon"
DAEMON = REPO / PACKAGE
ARCHITECTURE = REPO / "ARCHITECTURE.md"
README = REPO / "README.md"
# The documents a reader of the repository is sent to; the paths they name must exist.
DOCUMENTS = ("README.md", "ARCHITECTURE.md", "BENCHMARKS.md")
RULES_HEADING = "## Rooms and what each may import"
FOUNDATION = "foundation"
MAX_LINES = 650

# The one module that publishes a job's outputs and records its result; the one-shot
# transcription writes files for a user at a terminal and has no job to record.
RESULTS_MODULE = "daemon.jobs.results"
PUBLISHERS_ALLOWED = ("daemon/jobs/results.py", "daemon/cli/oneshot.py")
WRITERS_PUBLISH = "daemon.writers.publish"
# What recording a job's result means in the store and on disk: marking it done or reused,
# writing its segments, recording where its source was archived, archiving the source; and
# taking a result back (a done job run again or removed).
RESULT_STORE_METHODS = ("complete", "add_reused", "add_segments", "replace_segments", "set_archive_name",
                        "withdraw_result", "complete_summary")
RESULT_FUNCTIONS = ("daemon.jobs.spool.archive",)


def report(problems: list[str], heading: str = "") -> None:
    """Fail with one line per offence, and nothing else to read past."""
    if problems:
        pytest.fail("\n".join([heading, *problems] if heading else problems), pytrace=False)


# --- reading daemon/ ---------------------------------------------------------------------

@dataclass(frozen=True)
class Module:
    name: str  # dotted: daemon.jobs.worker; a package is named by its __init__.py
    path: Path
    is_package: bool

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def tree(self) -> ast.Module:
        return _parse(self.path)


@dataclass(frozen=True)
class Import:
    importer: Module
    target: str  # absolute dotted name; for daemon's own modules, the module it loads
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function)
    type_only: bool  # under `if TYPE_CHECKING:`: never runs

    @property
    def where(self) -> str:
        return f"{self.importer.rel}:{self.line}"


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(DAEMON.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        if not all(part.isidentifier() for part in parts):
            continue  # not importable (e.g. a data folder); nothing can import it
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def owning_module(dotted: str) -> str | None:
    """The daemon module that importing `dotted` loads (its longest existing prefix)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules():
            return name
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _from_base(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(module: Module, node: ast.stmt | ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = _from_base(module, node)
        for alias in node.names:
            # `from daemon.jobs import results` loads the submodule daemon.jobs.results;
            # `from daemon.store import Store` loads daemon.store.
            candidate = f"{base}.{alias.name}"
            yield candidate if alias.name != "*" and candidate in modules() else base
    elif isinstance(node, ast.Call):
        # importlib.import_module("x") / __import__("x") with a literal name is an import too
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
            yield node.args[0].value


@cache
def imports_of(name: str) -> tuple[Import, ...]:
    module = modules()[name]
    return read_imports(module, module.tree)


def read_imports(module: Module, tree: ast.Module) -> tuple[Import, ...]:
    found: list[Import] = []

    def walk(node: ast.AST, module_level: bool, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
            for target in _targets(module, node):  # type: ignore[arg-type]
                resolved = owning_module(target) if target.split(".")[0] == PACKAGE else None
                found.append(Import(module, resolved or target, node.lineno, module_level, type_only))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                walk(child, module_level, True)
            for child in node.orelse:
                walk(child, module_level, type_only)
            return
        for child in ast.iter_child_nodes(node):
            walk(child, module_level, type_only)

    walk(tree, True, False)
    return tuple(found)


def all_imports() -> Iterator[Import]:
    for name in modules():
        yield from imports_of(name)


# --- the rules table ---------------------------------------------------------------------

@dataclass(frozen=True)
class Room:
    name: str
    paths: tuple[str, ...]  # `daemon/*.py` (top-level modules) or a folder `daemon/jobs/`
    may_import: frozenset[str] | None  # rooms, or room.module for one module only; None: anything
    line: int
    modules: list[str] = field(default_factory=list, compare=False, hash=False)

    def holds(self, rel: str) -> bool:
        for pattern in self.paths:
            if pattern.endswith("/"):
                if rel.startswith(pattern):
                    return True
            elif len(PurePosixPath(rel).parts) == len(PurePosixPath(pattern).parts) \
                    and PurePosixPath(rel).match(pattern):
                return True
        return False

    def names(self, rel: str) -> bool:
        """Whether the row names this very file (which puts it here, whatever folder or
        pattern of another row also matches it: `daemon/__main__.py` in cli, say)."""
        return rel in self.paths

    @property
    def package(self) -> str | None:
        """The dotted package of a folder room (daemon.jobs); None for the foundation."""
        folders = [p for p in self.paths if p.endswith("/")]
        return folders[0].rstrip("/").replace("/", ".") if folders else None


NOTHING = {"—", "–", "-", "", "none", "nothing"}


@cache
def rooms() -> dict[str, Room]:
    """The rows of ARCHITECTURE.md's rules table, each with the modules it holds."""
    assert ARCHITECTURE.is_file(), f"{ARCHITECTURE.name} is missing at the repository root"
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    assert RULES_HEADING in lines, f"{ARCHITECTURE.name}: no heading {RULES_HEADING!r}"
    start = lines.index(RULES_HEADING)
    table: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.lstrip().startswith("|"):
            table.append((number, [cell.strip() for cell in line.strip().strip("|").split("|")]))
        elif table:
            break
    assert len(table) > 2, f"{ARCHITECTURE.name}: no table under {RULES_HEADING!r}"
    header = [cell.lower() for cell in table[0][1]]
    try:
        col_room, col_path, col_may = header.index("room"), header.index("path"), header.index("may import")
    except ValueError:
        raise AssertionError(f"{ARCHITECTURE.name}:{table[0][0]}: the rules table needs the columns room, path, "
                             f"may import; it has {table[0][1]}") from None
    found: dict[str, Room] = {}
    for number, cells in table[2:]:
        name = cells[col_room].strip("` ")
        paths = tuple(re.findall(r"`([^`]+)`", cells[col_path]))
        assert paths, f"{ARCHITECTURE.name}:{number}: room {name!r} names no `path`"
        may = cells[col_may].replace("`", "").strip()
        if may.lower() == "anything":
            allowed = None
        elif may.lower() in NOTHING:
            allowed = frozenset()
        else:
            allowed = frozenset(entry.strip() for entry in may.split(",") if entry.strip())
        assert name not in found, f"{ARCHITECTURE.name}:{number}: room {name!r} appears twice"
        found[name] = Room(name, paths, allowed, number)
    assert FOUNDATION in found, f"{ARCHITECTURE.name}: the rules table has no {FOUNDATION!r} row"
    for module in modules().values():
        named = [room for room in found.values() if room.names(module.rel)]
        for room in named or [room for room in found.values() if room.holds(module.rel)]:
            room.modules.append(module.name)
    return found


def room_of(module: str) -> Room | None:
    held = [room for room in rooms().values() if module in room.modules]
    return held[0] if len(held) == 1 else None


def describe(room: Room) -> str:
    if room.may_import is None:
        return "anything"
    return ", ".join([FOUNDATION, f"{room.name} itself", *sorted(room.may_import)]) if room.name != FOUNDATION \
        else ", ".join([FOUNDATION, *sorted(room.may_import)])


def allowed(importer: Room, target: str) -> bool:
    if importer.may_import is None:
        return True
    into = room_of(target)
    if into is None or into.name in (importer.name, FOUNDATION) or into.name in importer.may_import:
        return True
    # `web.server`: that one module of the room, not the rest of it
    return any(entry.partition(".")[0] == into.name and into.package is not None
               and target == f"{into.package}.{entry.partition('.')[2]}"
               for entry in importer.may_import if "." in entry)


# --- rooms and imports -------------------------------------------------------------------

def test_the_rules_table_is_well_formed() -> None:
    problems = []
    for room in rooms().values():
        for entry in sorted(room.may_import or ()):
            target, _, module = entry.partition(".")
            if target not in rooms():
                problems.append(f"{ARCHITECTURE.name}:{room.line}: {room.name} may import {entry!r}, "
                                f"which is no room of the table ({', '.join(rooms())})")
            elif module:
                package = rooms()[target].package
                if package is None or f"{package}.{module}" not in modules():
                    problems.append(f"{ARCHITECTURE.name}:{room.line}: {room.name} may import {entry!r}, "
                                    f"but there is no module {package}.{module}")
        for pattern in room.paths:
            if pattern.endswith("/") and not (REPO / pattern).is_dir():
                problems.append(f"{ARCHITECTURE.name}:{room.line}: room {room.name}'s folder {pattern} does not exist")
        if not room.modules:
            problems.append(f"{ARCHITECTURE.name}:{room.line}: room {room.name} ({', '.join(room.paths)}) "
                            "holds no module")
    report(problems)


def test_every_module_lies_in_exactly_one_room() -> None:
    problems = []
    for module in modules().values():
        held = [room.name for room in rooms().values() if module.name in room.modules]
        if len(held) != 1:
            problems.append(f"{module.rel}: in {len(held)} rooms of {ARCHITECTURE.name}'s table"
                            + (f" ({', '.join(held)})" if held else ""))
    folders = sorted(p.relative_to(REPO).as_posix() + "/" for p in DAEMON.iterdir()
                     if (p / "__init__.py").is_file())
    for folder in folders:
        if not any(folder in room.paths for room in rooms().values()):
            problems.append(f"{folder}: a package of daemon/ that is no room of {ARCHITECTURE.name}'s table")
    report(problems)


def test_each_room_imports_only_what_its_row_allows() -> None:
    problems = []
    for imp in all_imports():
        if imp.type_only or imp.target.split(".")[0] != PACKAGE:
            continue
        importer = room_of(imp.importer.name)
        if importer is None:
            continue  # reported by test_every_module_lies_in_exactly_one_room
        if not allowed(importer, imp.target):
            into = room_of(imp.target)
            when = "at import" if imp.module_level else "in a function"
            problems.append(f"{imp.where}: {importer.name} imports {imp.target} (room {into.name if into else '?'}) "
                            f"{when}; {importer.name} may import {describe(importer)}")
    report(problems, f"{len(problems)} import(s) against {ARCHITECTURE.name}'s table:")


@cache
def library_rules() -> dict[str, str]:
    """{library: the room that alone may import it}, from the sentences "Only `store`
    imports `sqlalchemy`; only `engine` imports `funasr` or `torch`." under the table."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rules: dict[str, str] = {}
    for room, libraries in re.findall(r"[Oo]nly `([\w.]+)` imports? ((?:`[\w.]+`(?:,\s*|\s+or\s+|\s+and\s+)?)+)",
                                      text):
        for library in re.findall(r"`([\w.]+)`", libraries):
            rules[library] = room
    return rules


def test_the_document_keeps_the_libraries_in_their_rooms() -> None:
    rules = library_rules()
    assert {"sqlalchemy": "store", "funasr": "engine", "torch": "engine"}.items() <= rules.items(), (
        f"{ARCHITECTURE.name} should say: Only `store` imports `sqlalchemy`; only `engine` imports `funasr` or "
        f"`torch` (found {rules})")
    assert set(rules.values()) <= set(rooms()), rules


def test_third_party_libraries_are_imported_only_in_their_room() -> None:
    # Every import counts here, TYPE_CHECKING ones too: a type from the library in a
    # signature outside its room is the library leaking out of it.
    problems = []
    for imp in all_imports():
        library = imp.target.split(".")[0]
        owner = library_rules().get(library)
        if owner is None:
            continue
        importer = room_of(imp.importer.name)
        if importer is None or importer.name != owner:
            problems.append(f"{imp.where}: imports {imp.target}, which only {owner} "
                            f"({', '.join(rooms()[owner].paths)}) may import")
    report(problems)


# --- size and cycles -------------------------------------------------------------------

def test_no_module_is_over_the_line_limit() -> None:
    # As `wc -l` counts: newline characters.
    sizes = {m.rel: m.text.count("\n") for m in modules().values()}
    over = [f"{rel}: {n} lines (at most {MAX_LINES})" for rel, n in sorted(sizes.items(), key=lambda i: -i[1])
            if n > MAX_LINES]
    report(over)


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {module it imports when it is imported: line}} among daemon's modules."""
    graph: dict[str, dict[str, int]] = {name: {} for name in modules()}
    for imp in all_imports():
        if imp.module_level and not imp.type_only and imp.target in modules() and imp.target != imp.importer.name:
            graph[imp.importer.name].setdefault(imp.target, imp.line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module, as a list ending where it starts."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                return [*paths[node], start]
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_no_import_cycles_at_run_time() -> None:
    graph = import_graph()
    problems = []
    for component in strongly_connected(graph):
        cycle = a_cycle(graph, component)
        steps = "; ".join(f"{modules()[a].rel}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:]))
        problems.append(f"{len(component)} modules import each other at import time ({', '.join(component)}); "
                        f"one cycle: {steps}")
    report(problems)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b": 1}, "b": {}}) == []


# --- one module records a job's result ---------------------------------------------------

def names_in(module: Module) -> dict[str, str]:
    """{local name: the dotted daemon name it stands for}, from every import of the module."""
    bound: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    first = alias.name.split(".")[0]
                    bound[first] = first
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        head = dotted(node.value, bound)
        return f"{head}.{node.attr}" if head else None
    return None


def references(module: Module, wanted: set[str]) -> Iterator[tuple[int, str]]:
    """(line, name) for every use of one of the dotted names `wanted` in the module."""
    bound = names_in(module)
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            name = dotted(node, bound)
            if name in wanted:
                yield node.lineno, name


def top_level_functions(module: Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {node.name: node for node in module.tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def publishers() -> set[str]:
    """writers.publish and every function of the results module that calls it directly."""
    results = modules().get(RESULTS_MODULE)
    assert results is not None, f"{RESULTS_MODULE} is missing: it is the module that records a job's result"
    writers_module = modules().get(WRITERS_PUBLISH.rpartition(".")[0])
    assert writers_module is not None and WRITERS_PUBLISH.rpartition(".")[2] in top_level_functions(writers_module), (
        f"{WRITERS_PUBLISH} is not defined: this test needs the function that writes a set of outputs")
    bound = names_in(results)
    found = {WRITERS_PUBLISH}
    for name, function in top_level_functions(results).items():
        if any(dotted(node, bound) == WRITERS_PUBLISH for node in ast.walk(function)
               if isinstance(node, (ast.Name, ast.Attribute))):
            found.add(f"{RESULTS_MODULE}.{name}")
    assert len(found) > 1, f"{results.rel} does not call {WRITERS_PUBLISH}: who publishes a job's outputs?"
    return found


def test_outputs_are_published_from_one_module_only() -> None:
    wanted = publishers()
    problems = [f"{module.rel}:{line}: uses {name}; a job's outputs are published by {RESULTS_MODULE}'s recording "
                f"functions only"
                for module in modules().values() if module.rel not in PUBLISHERS_ALLOWED
                for line, name in references(module, wanted)]
    report(problems)


def store_methods() -> set[str]:
    return {node.name for name, module in modules().items() if name.startswith(f"{PACKAGE}.store")
            for node in ast.walk(module.tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_a_job_s_result_is_recorded_from_one_module_only() -> None:
    # The store's own writes of a result, and archiving the source, happen in the results
    # module; the worker, twin reuse, rename and rematch go through it.
    defined = store_methods()
    missing = [m for m in RESULT_STORE_METHODS if m not in defined]
    assert not missing, (f"the store defines no {', '.join(missing)}: rename them in RESULT_STORE_METHODS "
                         "(they are the writes that record a job's result)")
    problems = []
    for module in modules().values():
        if module.name == RESULTS_MODULE or module.name.startswith(f"{PACKAGE}.store"):
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in RESULT_STORE_METHODS:
                problems.append(f"{module.rel}:{node.lineno}: calls .{node.func.attr}(), which records a job's "
                                f"result: only {RESULTS_MODULE} does")
        for line, name in references(module, set(RESULT_FUNCTIONS)):
            problems.append(f"{module.rel}:{line}: uses {name}, which archives a job's source: only "
                            f"{RESULTS_MODULE} does")
    report(problems)


# --- the map in the repository -----------------------------------------------------------

def test_architecture_md_names_every_room_folder() -> None:
    assert ARCHITECTURE.is_file(), f"{ARCHITECTURE.name} is missing at the repository root"
    text = ARCHITECTURE.read_text(encoding="utf-8")
    folders = sorted(p.relative_to(REPO).as_posix() + "/" for p in DAEMON.iterdir() if (p / "__init__.py").is_file())
    missing = [folder for folder in folders if folder not in text]
    assert not missing, f"{ARCHITECTURE.name} does not name {', '.join(missing)}"


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"  # [text](target "title")
                  r"|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)"  # [label]: target
                  r"|(?:href|src)=\"([^\"]+)\"", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def links(path: Path) -> Iterator[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    for match in LINK.finditer(text):
        target = next(group for group in match.groups() if group)
        yield text.count("\n", 0, match.start()) + 1, target


@pytest.mark.parametrize("name", ["README.md", "ARCHITECTURE.md"])
def test_the_documents_link_to_nothing_outside_the_repository(name: str) -> None:
    path = REPO / name
    problems = []
    for line, target in links(path):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue  # a web page or a heading of this document
        place = target.split("#")[0]
        resolved = (REPO / place).resolve() if not place.startswith("/") else Path(place)
        if ".." in PurePosixPath(place).parts or not resolved.is_relative_to(REPO):
            problems.append(f"{name}:{line}: links to {target}, outside the repository")
        elif not resolved.exists():
            problems.append(f"{name}:{line}: links to {target}, which does not exist")
    # a path written out rather than linked (`../shared/DESIGN.md`) sends the reader away too
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if "shared/DESIGN.md" in line or re.search(r"(?:^|[`\s(\[])\.\./", line):
            problems.append(f"{name}:{number}: points outside the repository: {line.strip()}")
    report(problems)


def test_readme_links_to_the_architecture() -> None:
    targets = [target.split("#")[0] for _, target in links(README)]
    assert ARCHITECTURE.name in targets, f"README.md has no link to {ARCHITECTURE.name}"


PATH_MENTION = re.compile(r"(?<![\w/.-])daemon/(?:\w+/)*(?:\w+\.py|\w+/)")
DOTTED_MENTION = re.compile(r"(?<![\w.])(daemon(?:\.\w+)+)")


def top_level_names(module: Module) -> set[str]:
    found: set[str] = set()
    for node in module.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                found.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return found


@cache
def config_keys() -> set[str]:
    """The keys of every config section (`daemon.host` is a key of the section `daemon`)."""
    return {node.target.id for node in ast.walk(modules()[f"{PACKAGE}.config"].tree)
            if isinstance(node, ast.ClassDef) for node in node.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


@cache
def shipped_folders() -> set[str]:
    """`daemon.systemd` and the like: folders of the repository shipped inside the package."""
    # read by pattern: tomllib is Python 3.11+, and spkd runs on 3.10
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text.partition("[tool.setuptools.package-dir]")[2].partition("\n[")[0]
    return set(re.findall(rf'^"{PACKAGE}\.(\w+)"\s*=', section, re.MULTILINE))


def stale_dotted(name: str) -> bool:
    """Whether `daemon.x.y` names a module of daemon (or a name in one) that is not there;
    `daemon.host` and the like are config keys, `daemon.systemd` a shipped folder."""
    parts = name.split(".")
    if parts[1] in shipped_folders() or (len(parts) == 2 and name not in modules() and parts[1] in config_keys()):
        return False
    owner = owning_module(name)
    assert owner is not None
    rest = name[len(owner) + 1:].split(".") if name != owner else []
    if not rest:
        return False
    module = modules()[owner]
    if rest[0] in top_level_names(module):
        return False
    return not (module.is_package and f"{owner}.{rest[0]}" in modules())


@pytest.mark.parametrize("name", DOCUMENTS)
def test_the_documents_name_only_files_that_exist(name: str) -> None:
    # A reader follows `daemon/jobs/results.py` from the map to the file: a path or a
    # module that moved must be written where it is now.
    text = (REPO / name).read_text(encoding="utf-8")
    problems = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: names {m.group(0)}, which does not exist"
                for m in PATH_MENTION.finditer(text) if not (REPO / m.group(0)).exists()]
    problems += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: names {m.group(1)}, which is not in "
                 f"{owning_module(m.group(1))}" for m in DOTTED_MENTION.finditer(text) if stale_dotted(m.group(1))]
    report(problems)


# --- the checker itself ------------------------------------------------------------------

def test_the_import_reader_counts_run_time_imports_only() -> None:
    source = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING
from . import spool
from .. import writers
from ..store import Store
if TYPE_CHECKING:
    from daemon.engine import Engine
else:
    import json
class Kept:
    import re
def f():
    import daemon.web.server
    from daemon.jobs import results
    importlib.import_module("daemon.voices")
"""
    module = Module("daemon.jobs.example", DAEMON / "jobs" / "example.py", False)
    found = {(i.target, i.module_level, i.type_only) for i in read_imports(module, ast.parse(source))}
    assert found == {
        ("__future__", True, False), ("os", True, False), ("typing", True, False), ("re", True, False),
        ("daemon.jobs.spool", True, False), ("daemon.writers", True, False), ("daemon.store", True, False),
        ("daemon.engine", True, True), ("json", True, False),
        ("daemon.web.server", False, False), ("daemon.jobs.results", False, False), ("daemon.voices", False, False),
    }
