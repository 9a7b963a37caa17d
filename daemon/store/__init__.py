"""The job store: every SQL statement of spkd lives in this package, and only here is
SQLAlchemy imported.

`Store` is one object for its callers, assembled from one part per concern:

* daemon/store/queue.py: enqueue, claim, heartbeat, complete, fail, take back, with
  the invariants of the claim, the lease and exactly-once completion;
* daemon/store/reads.py: one job, lists and pages of jobs, events, counts;
* daemon/store/workers.py: the worker slots' rows and the /metrics figures;
* daemon/store/segments.py: a done job's segments and the full-text search over them
  (daemon/store/search.py holds the rules that are not SQL);
* daemon/store/voices.py: the voice library's samples;
* daemon/store/rerenders.py: re-renders of done jobs recorded as intended, and found
  unfinished;
* daemon/store/corrections.py: the versions of a done job's corrected transcript;
* daemon/store/summaries.py: summary tasks of done jobs, claimed, leased, retried;
* daemon/store/retention.py: deleting finished jobs, the events notifiers read.

daemon/store/base.py holds what they share: the engine, and the read and write
helpers, inside which a database that cannot be used now (locked, out of reach, its
disk full) becomes a DatabaseUnavailableError (daemon/errors.py). Every method
returns rows of daemon/store/rows.py (frozen dataclasses), lists of them or plain
values. Connection settings and migrations live in daemon/store/db.py; the read-only
console for the user's own SQL in daemon/store/sqlconsole.py.
"""

from __future__ import annotations

from daemon.store.corrections import CorrectionStore
from daemon.store.queue import QueueStore
from daemon.store.reads import ReadStore
from daemon.store.rerenders import RerenderStore
from daemon.store.retention import RetentionStore
from daemon.store.rows import (
    DeviceFigures,
    EventRow,
    Job,
    JobFilter,
    MetricFigures,
    NoticeRow,
    Outcome,
    SampleRow,
    SegmentMatch,
    SummaryRow,
    TranscriptVersion,
    VoiceSummary,
    WorkerRow,
    hostname,
    utcnow,
)
from daemon.store.segments import SegmentStore
from daemon.store.summaries import SummaryStore
from daemon.store.voices import VoiceStore
from daemon.store.workers import WorkerStore

__all__ = ["DeviceFigures", "EventRow", "Job", "JobFilter", "MetricFigures", "NoticeRow", "Outcome", "SampleRow",
           "SegmentMatch", "Store", "SummaryRow", "TranscriptVersion", "VoiceSummary", "WorkerRow", "hostname",
           "utcnow"]


class Store(QueueStore, ReadStore, WorkerStore, SegmentStore, VoiceStore, RetentionStore, RerenderStore,
            CorrectionStore, SummaryStore):
    """The job database, as spkd's processes use it (one per process: it holds a
    connection pool). `Store(url, host=…)`: `host` names this machine in the rows it
    writes (workers, claims), the machine's name by default. `read_only=True`: a
    store that only reads (`spkd transcribe --voices`); any write is refused by the
    database."""
