"""The `workers` table (one row per worker slot of each host) and the figures /metrics reports."""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import and_, case, func, insert, select, update

from daemon.store.base import StoreBase
from daemon.store.rows import DeviceFigures, MetricFigures, WorkerRow, utcnow
from daemon.store.schema import JOB_STATES, jobs, workers

__all__ = ["WorkerStore"]


class WorkerStore(StoreBase):
    def worker_update(self, slot: int, **values: Any) -> None:
        """Upsert this host's row for `slot`."""
        values = {**values, "heartbeat_at": values.get("heartbeat_at", utcnow())}
        with self._write() as conn:
            result = conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot == slot)
                                  .values(**values))
            if result.rowcount == 0:
                conn.execute(insert(workers).values(host=self.host, slot=slot,
                                                    **{"state": "booting", "jobs_done": 0, **values}))

    def worker_job_done(self, slot: int, *, rss_mb: float | None) -> None:
        with self._write() as conn:
            conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot == slot).values(
                jobs_done=workers.c.jobs_done + 1, rss_mb=rss_mb, current_job_id=None, state="ready",
                heartbeat_at=utcnow()))

    def worker_rows(self, *, host: str | None = None) -> list[WorkerRow]:
        """The worker slots (of `host`), by host and slot."""
        with self._read() as conn:
            query = select(*workers.c).order_by(workers.c.host, workers.c.slot)
            if host is not None:
                query = query.where(workers.c.host == host)
            return [WorkerRow.from_row(r) for r in conn.execute(query).mappings()]

    def forget_workers_above(self, slot_count: int) -> None:
        """After the pool shrank (SIGHUP), slots that no longer exist are shown as stopped."""
        with self._write() as conn:
            conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot >= slot_count)
                         .values(state="stopped", pid=None, current_job_id=None))

    def metric_figures(self, *, processing_buckets: Sequence[float], rtf_buckets: Sequence[float]) -> MetricFigures:
        """Everything /metrics reports, read in one go at scrape time. Histograms count
        done jobs that were transcribed (not reuses) at or below each bucket bound."""
        transcribed = and_(jobs.c.state == "done", jobs.c.reused_from.is_(None), jobs.c.processing_seconds.isnot(None))

        def at_most(column: Any, bound: float) -> Any:
            return func.sum(case((column <= bound, 1), else_=0))

        device = jobs.c.device
        columns = [device, func.count().label("jobs"),
                   func.coalesce(func.sum(jobs.c.audio_seconds), 0.0).label("audio_seconds"),
                   func.coalesce(func.sum(jobs.c.processing_seconds), 0.0).label("processing_seconds"),
                   func.coalesce(func.sum(jobs.c.rtf), 0.0).label("rtf_sum")]
        columns += [at_most(jobs.c.processing_seconds, b).label(f"p{i}") for i, b in enumerate(processing_buckets)]
        columns += [at_most(jobs.c.rtf, b).label(f"r{i}") for i, b in enumerate(rtf_buckets)]
        with self._read() as conn:
            by_state = {state: int(n) for state, n in
                        conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()}
            devices = [DeviceFigures(
                device=r["device"] or "unknown", jobs=int(r["jobs"]), audio_seconds=float(r["audio_seconds"]),
                processing_seconds=float(r["processing_seconds"]), rtf_sum=float(r["rtf_sum"]),
                processing_buckets={b: int(r[f"p{i}"] or 0) for i, b in enumerate(processing_buckets)},
                rtf_buckets={b: int(r[f"r{i}"] or 0) for i, b in enumerate(rtf_buckets)})
                for r in conn.execute(select(*columns).where(transcribed).group_by(device).order_by(device)).mappings()]
            oldest = conn.execute(select(func.min(jobs.c.created_at)).where(jobs.c.state == "queued")).scalar_one()
            last_done = conn.execute(select(func.max(jobs.c.finished_at)).where(jobs.c.state == "done")).scalar_one()
            worker_rows = [WorkerRow.from_row(r) for r in
                           conn.execute(select(*workers.c).order_by(workers.c.host, workers.c.slot)).mappings()]
        return MetricFigures(jobs_by_state={s: by_state.get(s, 0) for s in JOB_STATES}, devices=devices,
                             oldest_queued_at=oldest, last_done_at=last_done, workers=worker_rows)
