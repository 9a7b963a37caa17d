"""`spkd models list` and `spkd models make-tiny`: which models are configured (and
whether they are tiny test models), and building the tiny ones with their progress.

The builder (daemon.engine.tiny_models) prints nothing: it reports each stage to a
callback, which `StepPrinter` shows on stderr, as one line updated in place on a
terminal, else one line per stage, and the total time at the end.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from daemon.cli.common import load_config, megabytes, print_json, print_table
from daemon.errors import ExitCode
from daemon.progress import duration_text

if TYPE_CHECKING:
    from daemon.engine.tiny_models import BuildStep

__all__ = ["StepPrinter", "cmd_models_list", "cmd_models_make_tiny"]

# A line updated in place is redrawn at most this often (a count may move hundreds of
# times a second).
REDRAW_SECONDS = 0.1


class StepPrinter:
    """Shows a build's `BuildStep`s on `stream`: `live` (a terminal) keeps one line,
    rewritten in place, with the stage, its count and the time so far; otherwise each
    stage gets one line when it begins. `note` prints a line of its own (a warning)
    without breaking the live line; `finish` says how long it all took. Live, the time
    on the line goes on every `tick_seconds` while a stage counts nothing (loading
    FunASR takes seconds without a word)."""

    def __init__(self, stream: TextIO, *, live: bool, clock: Callable[[], float] = time.monotonic,
                 tick_seconds: float | None = 1.0) -> None:
        self.stream = stream
        self.live = live
        self._clock = clock
        self.started = clock()
        self._index: int | None = None
        self._step: BuildStep | None = None
        self._line = ""
        self._drawn_at = float("-inf")
        self._lock = threading.Lock()
        self._done = threading.Event()
        if live and tick_seconds:
            threading.Thread(target=self._tick, args=(tick_seconds,), name="spkd-progress", daemon=True).start()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def __call__(self, step: BuildStep) -> None:
        with self._lock:
            new_stage = step.index != self._index
            self._index, self._step = step.index, step
            if not self.live:
                if new_stage:
                    self.stream.write(f"[{step.index}/{step.stages}] {step.title} "
                                      f"(at {duration_text(self.elapsed())})\n")
                    self.stream.flush()
                return
            if new_stage or self._clock() - self._drawn_at >= REDRAW_SECONDS or step.done == step.total:
                self._draw()

    def _draw(self) -> None:
        step = self._step
        if step is None:
            return
        count = ""
        if step.total:
            done = step.done or 0
            count = f": {done}/{step.total}{' ' + step.unit if step.unit else ''} ({100 * done / step.total:.0f}%)"
        self._line = f"[{step.index}/{step.stages}] {step.title}{count}  {duration_text(self.elapsed())}"
        self.stream.write("\r\x1b[K" + self._line)
        self.stream.flush()
        self._drawn_at = self._clock()

    def _tick(self, seconds: float) -> None:
        while not self._done.wait(seconds):
            with self._lock:
                if self._line:
                    self._draw()

    def note(self, message: str) -> None:
        with self._lock:
            if self.live and self._line:
                self.stream.write("\r\x1b[K")
            self.stream.write(message.rstrip("\n") + "\n")
            if self.live and self._line:
                self._draw()
            self.stream.flush()

    def finish(self, message: str) -> None:
        self._done.set()
        with self._lock:
            if self.live and self._line:
                self.stream.write("\r\x1b[K")
                self._line = ""
            self._step = None
            self.stream.write(f"{message} in {duration_text(self.elapsed())}\n")
            self.stream.flush()


def cmd_models_make_tiny(args: argparse.Namespace) -> int:
    from loguru import logger

    from daemon.engine.tiny_models import build_tiny_models

    live = sys.stderr.isatty() if args.progress is None else args.progress
    printer = StepPrinter(sys.stderr, live=live)
    # The builder's own warnings (espeak-ng missing: a random speaker model) as lines of
    # their own, not through the line being rewritten.
    logger.remove()
    logger.add(printer.note, level="WARNING", format="{level}: {message}")
    target = Path(args.dir)
    try:
        dirs = build_tiny_models(target, real_sizes=args.real_sizes, progress=printer)
    except BaseException:
        printer.finish("stopped")  # the line ends, and how long it ran is said
        raise
    printer.finish(f"built {'real-size random' if args.real_sizes else 'tiny test'} models in {target}")
    for role, path in dirs.items():
        print(f"{role:5} {path}")
    return ExitCode.OK


def cmd_models_list(args: argparse.Namespace) -> int:
    from daemon.engine.models import PINNED, TINY_NOTE, list_models

    config = load_config(args)
    rows = list_models(config.models.dir, asr=config.models.asr, vad=config.models.vad, punc=config.models.punc,
                       spk=config.models.spk)
    if args.json:
        print_json(rows)
        return ExitCode.OK
    print_table(("role", "name", "present", "kind", "revision", "size_mb", "path"),
                [[r["role"], r["name"], "yes" if r["present"] else "MISSING",
                  ("tiny test" if r["tiny"] else "real") if r["present"] else "",
                  r.get("revision") or "", megabytes(r["size_bytes"] / 2**20) if r.get("size_bytes") else "", r["path"]] for r in rows],
                wide=args.wide)
    tiny = [r["role"] for r in rows if r["tiny"]]
    if tiny:
        print(f"{', '.join(tiny)}: {TINY_NOTE}")
    # What `spkd models fetch` downloads, for copying by hand where there is no internet:
    # plain lines, since a table would cut the long ids.
    print("pinned models (`spkd models fetch` downloads these from ModelScope; without internet copy them into "
          f"{config.models.dir} by hand):")
    for r in rows:
        print(f"  {r['role']:5} {r['model_id']} @ {r['pinned_revision']} -> {PINNED[r['role']].name}")
    return ExitCode.OK
