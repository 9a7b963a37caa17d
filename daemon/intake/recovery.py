"""Spool recovery: a spooled file without a job row gets one.

The watcher moves a file into the spool *before* it records the file's job, so a
crash (or a database out of reach) between the two leaves a spool file without a
row; nothing is ever left half-taken in the inbox. This turns such files into jobs:
at start, and after every periodic rescan (so a file whose row could not be inserted
is recorded once the database is back, without waiting for a restart).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files
from daemon.errors import DatabaseUnavailableError
from daemon.jobs import spool

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["FOREIGN_ORPHAN_SECONDS", "SpoolRecovery"]

# Another host's spool file without a job row is adopted at start only once it is this
# old: that host died between moving it in and recording it, and has not come back.
FOREIGN_ORPHAN_SECONDS = 3600.0


class SpoolRecovery:
    """The watcher's recovery (daemon.intake.watcher.Watcher inherits it): it records
    jobs the way the watcher does (`enqueue_spooled`, `_fail_spooled`), under the
    watcher's lock."""

    config: Config
    store: Store
    inbox: Path
    _take_lock: threading.Lock

    if TYPE_CHECKING:
        def log_repeated(self, key: Any, message: str, *args: Any, level: str = "WARNING") -> None: ...

        def enqueue_spooled(self, spool_path: Path, *, source_name: str, sha256: str | None = None,
                            size_bytes: int | None = None) -> int: ...

        def _fail_spooled(self, spool_path: Path, source_name: str, exc: BaseException, *,
                          sha256: str | None = None, size_bytes: int | None = None) -> int | None: ...

    def recover_spool(self) -> list[int]:
        """Spool files without a job row (a supervisor died between move and insert).

        With several hosts sharing one spool, a file another host has just moved in
        has no row *yet*: its watcher is about to insert it. So at start a host takes
        only the orphans in its own token folders (`<time>-<host>-<random>`; its own
        watcher is not running yet, so none of them is in flight), plus those of any
        host that are older than FOREIGN_ORPHAN_SECONDS (that host died and stayed
        down). It claims each by renaming the token folder to a fresh one of its own:
        like the inbox move, only one rename succeeds, so two hosts starting together
        never both enqueue the same orphan.

        Also run after every periodic rescan (under the lock that `take` holds), so a file
        whose row could not be inserted (the database out of reach) is recorded once
        the database is back, without waiting for a restart."""
        with self._take_lock:  # none of this host's own files is in flight meanwhile
            return self._recover_spool()

    def _recover_spool(self) -> list[int]:
        spool_root = self.config.paths.spool
        spooled = spool.spooled_files(spool_root)
        known = {str(Path(p)) for p in self.store.jobs_by_spool_path(str(p) for p in spooled)}
        recovered: list[int] = []
        for path in spooled:
            if str(path) in known:
                continue
            try:
                job_id = self._recover_one(spool_root, path)
            except DatabaseUnavailableError:
                raise  # the database is out of reach: every file waits for the next try
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop recovery (or the start)
                self.log_repeated(("recover", path), "recovery: cannot recover {}: {}: {}", path,
                                  type(exc).__name__, exc, level="ERROR")
                continue
            if job_id is not None:
                recovered.append(job_id)
        return recovered

    def _recover_one(self, spool_root: Path, path: Path) -> int | None:
        token = spool.token_of(spool_root, path)
        if len(path.relative_to(spool_root).parts) < 2:
            return None  # not in a token folder: not ours
        if not spool.owned_by(token, self.store.host):
            created = spool.token_info(token).created
            if created is None or time.time() - created < FOREIGN_ORPHAN_SECONDS:
                return None  # another host's file in flight (or recovered by that host when it restarts)
        source_name = spool.source_name_of(spool_root, path)
        fresh = spool.new_slot(spool_root, self.store.host)
        try:
            os.rename(spool_root / token, fresh)
        except FileNotFoundError:
            return None  # another host claimed it first
        adopted = fresh / source_name
        logger.debug("recovering spooled file without a job: {} (from {})", adopted, path)
        self._recover_sidecar(adopted, source_name)
        readable = files.readable_relative(source_name, reserve_bytes=len(spool.SIDECAR_SUFFIX)
                                           if files.exists(spool.sidecar_of(adopted)) else 0)
        if readable != source_name:
            # Spooled by an spkd that kept names the database cannot hold (not UTF-8).
            renamed = files.move(adopted, fresh / readable)
            if files.exists(spool.sidecar_of(adopted)):
                files.move(spool.sidecar_of(adopted), spool.sidecar_of(renamed))
            spool.remove_empty_parents(adopted.parent, fresh)
            adopted, source_name = renamed, readable
        try:
            job_id = self.enqueue_spooled(adopted, source_name=source_name)
        except DatabaseUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            return self._fail_spooled(adopted, source_name, exc)
        logger.warning("job {} recorded for a spooled file that had none: {} (was {})", job_id, source_name, path)
        return job_id

    def _recover_sidecar(self, spooled: Path, source_name: str) -> None:
        """A crash between moving a file and moving its sidecar leaves the sidecar in the
        inbox; bring it along unless a new file of the same name is waiting there."""
        sidecar = spool.sidecar_of(spooled)
        try:
            left = files.inside(self.inbox, source_name)
        except ValueError:
            return
        left_sidecar = spool.sidecar_of(left)
        if files.exists(sidecar) or files.exists(left) or not files.exists(left_sidecar):
            return
        try:
            files.move(left_sidecar, sidecar)
        except FileNotFoundError:
            pass
