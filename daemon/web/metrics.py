"""`/metrics`: the database as Prometheus sees it, read at scrape time.

A custom prometheus_client collector asks the store for its figures on every scrape
(one read transaction), so every process serving the dashboard reports the same
numbers, whether or not the daemon runs, and nothing is kept in memory between
scrapes. Counters and histograms count the job rows the database keeps: with
`retention.job_rows_days` set they drop when old rows go, which Prometheus treats as a
counter reset.

    spkd_jobs{state}                               gauge: jobs in each state
    spkd_queue_depth                               gauge: queued jobs
    spkd_oldest_queued_job_age_seconds             gauge: 0 when nothing is queued
    spkd_audio_seconds_total{device}               counter: audio transcribed
    spkd_processing_seconds{device}                histogram: a job's processing time
    spkd_real_time_factor{device}                  histogram: processing / audio seconds
    spkd_slot_state{host,slot,device,state}        gauge: 1 for each slot's current state
    spkd_disk_guard_paused                         gauge: 1 while claiming is paused
    spkd_last_success_timestamp_seconds            gauge: when the newest job was done
    spkd_daemon_up                                 gauge: this host's daemon is running
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from daemon.jobs import diskguard
from daemon.service import manager as service

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["PROCESSING_BUCKETS", "RTF_BUCKETS", "SLOT_STATES", "SpkdCollector", "registry_for"]

PROCESSING_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SLOT_STATES = ("booting", "ready", "busy", "stopped", "failed")


def _epoch(moment: dt.datetime) -> float:
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


class SpkdCollector(Collector):
    def __init__(self, config: "Config", store: "Store") -> None:
        self.config = config
        self.store = store

    def collect(self) -> Iterator[Metric]:
        figures = self.store.metric_figures(processing_buckets=PROCESSING_BUCKETS, rtf_buckets=RTF_BUCKETS)
        jobs = GaugeMetricFamily("spkd_jobs", "Jobs in the database, by state.", labels=["state"])
        for state, count in figures.jobs_by_state.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("spkd_queue_depth", "Jobs waiting to be transcribed.",
                                value=figures.jobs_by_state.get("queued", 0))
        age = time.time() - _epoch(figures.oldest_queued_at) if figures.oldest_queued_at else 0.0
        yield GaugeMetricFamily("spkd_oldest_queued_job_age_seconds",
                                "How long the oldest queued job has waited (0: none queued).", value=max(0.0, age))

        audio = CounterMetricFamily("spkd_audio_seconds", "Seconds of audio transcribed, by device.",
                                    labels=["device"])
        processing = HistogramMetricFamily("spkd_processing_seconds", "Processing time of transcribed jobs.",
                                           labels=["device"])
        rtf = HistogramMetricFamily("spkd_real_time_factor", "Processing seconds per audio second of each job.",
                                    labels=["device"])
        for device in figures.devices:
            audio.add_metric([device.device], device.audio_seconds)
            processing.add_metric([device.device], _buckets(device.processing_buckets, device.jobs),
                                  sum_value=device.processing_seconds)
            rtf.add_metric([device.device], _buckets(device.rtf_buckets, device.jobs), sum_value=device.rtf_sum)
        yield audio
        yield processing
        yield rtf

        slots = GaugeMetricFamily("spkd_slot_state", "1 for the state each worker slot is in.",
                                  labels=["host", "slot", "device", "state"])
        for row in figures.workers:
            for state in SLOT_STATES:
                slots.add_metric([row.host, str(row.slot), row.device or "", state],
                                 1.0 if row.state == state else 0.0)
        yield slots
        yield GaugeMetricFamily("spkd_disk_guard_paused", "1 while the disk guard pauses claiming.",
                                value=1.0 if diskguard.paused_reason(self.config) else 0.0)
        last = GaugeMetricFamily("spkd_last_success_timestamp_seconds",
                                 "When the newest done job finished (Unix time); absent before the first.")
        if figures.last_done_at is not None:
            last.add_metric([], _epoch(figures.last_done_at))
        yield last
        up = service.running_daemon(self.config) is not None
        yield GaugeMetricFamily("spkd_daemon_up", "1 while this host's daemon runs (its runtime file's pid lives).",
                                value=1.0 if up else 0.0)


def _buckets(counts: dict[float, int], total: int) -> list[tuple[str, float]]:
    return [(floatToGoString(bound), float(n)) for bound, n in sorted(counts.items())] + [("+Inf", float(total))]


def registry_for(config: "Config", store: "Store") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpkdCollector(config, store))
    return registry
