"""2. Drop to start: how long a stable file waits before an idle worker starts it.

The real daemon (`python -m daemon run`) with the fake engine from tests/fakes/engine.py
(`SPKD_ENGINE_FACTORY=tests.fakes.engine:make`, 0.1-s jobs), W = 2 idle workers, product
poll interval (0.5 s). Files (distinct 1-s wavs) are dropped one at a time, each after
the previous one was claimed, so the workers are always idle when a file becomes stable.

* queued → claimed: the watcher's `queued` job_event (file stable, hashed, probed,
  moved to the spool, row inserted) to the worker's `claimed` event.
* drop → claimed − settle: from the rename into the inbox to `claimed`, minus
  settle_seconds (what the stability rule costs by design).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import Result, daemon_config, footer, header, parse_utc, percentile, table, utcnow

SETTLE = 1.0
POLL = 0.5


def main(quick: bool = False) -> Result:
    from tests.support.daemon import Daemon, write_wav

    n = 6 if quick else 15
    started = header("start", quick, f"drop → claimed, {n} files one at a time, 2 idle workers, fake engine, "
                                     f"settle {SETTLE} s, poll {POLL} s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="spkd-bench-start-") as tmp:
        root = Path(tmp)
        config = daemon_config(workers={"count": 2, "device": "cpu", "poll_seconds": POLL},
                               watch={"settle_seconds": SETTLE})
        stage = root / "stage"
        files = [write_wav(stage / f"drop{i:03d}.wav", seconds=1.0, seed=i) for i in range(n)]
        with Daemon(root / "d", config=config, fake_engine=True) as d:
            d.start(timeout=120)
            for i, f in enumerate(files):
                dropped = utcnow()
                os.rename(f, d.inbox / f.name)
                d.wait(lambda f=f: any(e["kind"] == "claimed" for e in d.query(
                    "select e.kind from job_events e join jobs j on j.id = e.job_id where j.source_name = ?",
                    f.name)), timeout=60, what=f"claim of {f.name}")
                ev = {e["kind"]: parse_utc(e["at"]) for e in d.query(
                    "select e.kind, e.at from job_events e join jobs j on j.id = e.job_id where j.source_name = ?",
                    f.name)}
                rows.append({"file": f.name, "drop_to_queued": (ev["queued"] - dropped).total_seconds(),
                             "queued_to_claimed": (ev["claimed"] - ev["queued"]).total_seconds(),
                             "drop_to_claimed": (ev["claimed"] - dropped).total_seconds()})
                time.sleep(0.05 * (i % 7))  # don't drop in lockstep with the 0.5-s poll
            d.wait_finished(n, timeout=60)
            assert d.stop() == 0
    q2c = [r["queued_to_claimed"] for r in rows]
    d2c = [r["drop_to_claimed"] - SETTLE for r in rows]
    d2q = [r["drop_to_queued"] - SETTLE for r in rows]
    stats = lambda xs: [percentile(xs, 50) * 1000, percentile(xs, 99) * 1000, min(xs) * 1000, max(xs) * 1000]
    table(f"Drop to start, {n} drops, idle workers (ms)", ["interval", "p50 ms", "p99 ms", "min ms", "max ms"], [
        ["queued event → claimed event (stable file → worker starts)", *stats(q2c)],
        [f"drop → queued − settle ({SETTLE} s): watcher tick, hash, probe, spool, insert", *stats(d2q)],
        [f"drop → claimed − settle ({SETTLE} s)", *stats(d2c)],
    ])
    result = Result("start")
    result.ratio("p50 queued→claimed / poll interval", percentile(q2c, 50) / POLL,
                 "≈0.5 for a uniformly random phase against the poll; drops here follow the previous "
                 "claim, so the phase is not uniform")
    result.ratio("p99 drop→claimed−settle / poll interval", percentile(d2c, 99) / POLL)
    result.notes.append("no target was set for this one; idle workers poll every workers.poll_seconds, so "
                        "queued→claimed is bounded by the poll interval plus a claim")
    result.report()
    footer("start", started)
    return result


if __name__ == "__main__":
    main()
