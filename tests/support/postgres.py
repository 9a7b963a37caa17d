"""A private PostgreSQL server for the tests, started once per test session.

`make test` installs the Debian package `postgresql` where it is missing (see
scripts/system-deps.sh); this module only needs its programs (`initdb`, `pg_ctl`,
found on PATH or under /usr/lib/postgresql/*/bin). It creates a throw-away cluster
in a temporary folder, listening on 127.0.0.1 on a free port with trust
authentication and durability switched off (tests only), and removes it at the
end. Run as root, it runs the server as the `postgres` user (PostgreSQL refuses
to run as root).

`SPKD_TEST_POSTGRES_URL` (e.g. `postgresql+psycopg://user:pw@db.example/spkd`)
uses an existing server instead; each test still gets a fresh database on it, so
the role needs CREATEDB.

Where none of this is possible the PostgreSQL tests skip, saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

URL_ENV = "SPKD_TEST_POSTGRES_URL"


class Unavailable(Exception):
    """PostgreSQL cannot be used here; the message says why and what to do."""


def find_bin_dir() -> Path | None:
    for program in ("pg_ctl",):
        found = shutil.which(program)
        if found:
            return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin/pg_ctl"))
    candidates += sorted(glob.glob("/usr/local/opt/postgresql*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`url` is the maintenance database's SQLAlchemy URL; `new_database()` makes a fresh one."""

    def __init__(self) -> None:
        self.url = ""
        self.data_dir: Path | None = None
        self._run_as: list[str] = []
        self._options = ""
        self._bin: Path | None = None

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> "PostgresServer":
        external = os.environ.get(URL_ENV)
        if external:
            self.url = external
            self._check(wait_seconds=5)
            return self
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise Unavailable("PostgreSQL is not installed (no pg_ctl on PATH or under /usr/lib/postgresql/*/bin); "
                              "`make test` installs it (Debian: apt-get install postgresql), or set "
                              f"{URL_ENV} to a server's URL")
        self._bin = bin_dir
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root, and there is no `postgres` user to run the server as "
                                  "(PostgreSQL refuses to run as root); run the tests as another user or set "
                                  f"{URL_ENV}") from None
            runuser = shutil.which("runuser")
            self._run_as = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh",
                                                                             "-c"]
        self.data_dir = Path(tempfile.mkdtemp(prefix="spkd-pg-"))
        if owner is not None:
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        port = _free_port()
        pgdata = self.data_dir / "data"
        self._pg("initdb", "-D", str(pgdata), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
                 "--locale=C")
        options = (f"-p {port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._options = options
        self.resume()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self._check()
        return self

    def pause(self) -> None:
        """Stop the server, keeping its data (a database outage); `resume()` brings it back."""
        assert self.data_dir is not None, "only a server started here can be paused"
        self._pg("pg_ctl", "-D", str(self.data_dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        assert self.data_dir is not None
        self._pg("pg_ctl", "-D", str(self.data_dir / "data"), "-l", str(self.data_dir / "server.log"), "-w", "-t",
                 "60", "-o", self._options, "start")

    def _pg(self, program: str, *args: str) -> None:
        assert self._bin is not None
        command = [str(self._bin / program), *args]
        if self._run_as and self._run_as[0] == "su":
            import shlex

            command = [*self._run_as, shlex.join(command)]
        else:
            command = [*self._run_as, *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if result.returncode != 0:
            log = ""
            if self.data_dir is not None and (self.data_dir / "server.log").exists():
                log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
            raise Unavailable(f"{program} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{log}")

    def _check(self, wait_seconds: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                with psycopg.connect(self.libpq_url(self.url), autocommit=True, connect_timeout=5) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"cannot connect to PostgreSQL at {self.url}: {exc}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.data_dir is None:
            return
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir / "data"), "-m", "immediate", "-w", "stop")
        except Unavailable:
            pass
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = None

    # --- databases ---------------------------------------------------------------------

    @staticmethod
    def libpq_url(url: str) -> str:
        """The SQLAlchemy URL as psycopg takes it."""
        return url.replace("postgresql+psycopg://", "postgresql://", 1)

    def new_database(self, *, locale: str | None = None) -> str:
        """A fresh, empty database (with `locale` as its collation and character
        classes, else the server's, C); returns its SQLAlchemy URL."""
        import psycopg
        from sqlalchemy.engine import make_url

        name = f"spkd_test_{secrets.token_hex(6)}"
        with_locale = f" TEMPLATE template0 LOCALE '{locale}'" if locale else ""
        with psycopg.connect(self.libpq_url(self.url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{with_locale}')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        try:
            with psycopg.connect(self.libpq_url(self.url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass


def query(url: str, sql: str, *params: object) -> list[dict]:
    """Rows as dicts (for tests that look at a PostgreSQL database from outside)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(PostgresServer.libpq_url(url), autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(sql.replace("?", "%s"), params or None))
