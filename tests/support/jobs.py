"""Jobs as the daemon leaves them, made by the product's own functions (store, spool,
results), for the tests of retry, cancel and remove."""

from __future__ import annotations

from pathlib import Path

from daemon import files
from daemon.config import Config
from daemon.errors import SpkdError
from daemon.jobs import results, spool
from daemon.store import Store
from daemon.transcript import Segment, Source, Transcript
from tests.support.daemon import write_wav

__all__ = ["done_job", "failed_job", "queued_job"]


def failed_job(config: Config, store: Store, name: str, error: SpkdError, *, content: bytes | None = None,
               sidecar: str | None = None) -> tuple[int, Path]:
    """A job that failed at intake with `error`, its source (and sidecar) in failed/
    beside its .error.json, as the watcher leaves it. Returns its id and that source."""
    source = spool.new_slot(config.paths.spool, "h1") / name
    if content is None:
        write_wav(source, 1.0)
    else:
        source.parent.mkdir(parents=True)
        source.write_bytes(content)
    if sidecar is not None:
        spool.sidecar_of(source).write_text(sidecar, encoding="utf-8")
    sha = files.sha256_file(source)
    job_id = store.add_failed(source_name=name, spool_path=str(source), output_stem=Path(name).stem, sha256=sha,
                              size_bytes=source.stat().st_size, kind=error.kind, message=error.message)
    spool.fail(spool_path=source, spool_root=config.paths.spool, failed_root=config.paths.failed, source_name=name,
               job_id=job_id, sha256=sha, error_kind=error.kind, error_message=error.message, attempts=0)
    return job_id, config.paths.failed / name


def done_job(config: Config, store: Store, name: str) -> int:
    """A transcribed job: outputs, stored transcript, segments, its source archived."""
    source = write_wav(spool.new_slot(config.paths.spool, "h1") / name, 1.0)
    job_id = store.enqueue(source_name=name, spool_path=str(source), output_stem=Path(name).stem,
                           sha256=files.sha256_file(source), size_bytes=source.stat().st_size)
    job = store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    transcript = Transcript(segments=(Segment(0.0, 1.0, 1, "hello there"),), audio_seconds=1.0,
                            source=Source(name=name))
    written = results.write_outputs(config, job_id, transcript, output_stem=job.output_stem, formats=("txt", "json"))
    results.record_transcribed(config, store, job, transcript, written=written, pid=1, processing_seconds=0.1,
                               device="cpu")
    return job_id


def queued_job(config: Config, store: Store, name: str) -> int:
    """A job queued with its source in the spool."""
    source = write_wav(spool.new_slot(config.paths.spool, "h1") / name, 1.0)
    return store.enqueue(source_name=name, spool_path=str(source), output_stem=Path(name).stem, sha256=None,
                         size_bytes=source.stat().st_size)
