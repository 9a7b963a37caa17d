"""5. Search: full-text search over 10,000 hours of transcripts (about 5 million segments),
on SQLite and on PostgreSQL.

The SQLite database is built once through the real migration and store and cached under
bench/.cache (several GB, rebuilt when the generator changes): every job enqueued,
claimed and completed by the store, its segments written by the store's own
`write_segments` (what `Store.complete` calls: rows, the trigram FTS5 table through its
triggers) for 200 jobs per transaction; recordings are generated in chunks by two
processes meanwhile. Its index of grams is left to migration 0010's backfill
(`Store.backfill_search_index`, batches of ~0.2 s), timed: the rate `spkd db upgrade`
estimates with. The PostgreSQL database (a private server, tests/support/postgres.py's,
its cluster kept under /var/tmp/spkd-bench-pg; a UTF-8 locale, so that pg_trgm indexes
Chinese) is copied from it (COPY: the same rows), its trigram index built, and its GIN
index of grams built by the same backfill (CREATE INDEX CONCURRENTLY), timed.
`--build sqlite|postgresql` builds one backend's database only; `--hours N` another
size; `--finish-interrupted` keeps a build that was stopped as the smaller database it is.

Text: Chinese sentences from a character bigram table counted from
bench/search_corpus.txt (text written for this benchmark; a few English words mixed
in), at 3.5-5.5 characters per second of speech; segments of 1-20 s with pauses, about
one per 7 s; recordings of 5-180 minutes with 2-6 speakers, some of them named from a
pool of 40 (a voice library would name them), a few guests from a pool of 400 (each
in one or two recordings), the rest Speaker1, Speaker2, …;
received over three years (`jobs.created_at` spread after the build).

Then, on each backend:

* search latency (`daemon.store.search.search`, the CLI's path less printing, first page of
  20 hits) for 1-, 2-, 3-, 4- and 8-character queries, with no filter, `--speaker`,
  `--since` (the last 90 days) and `--until` (the first year): queries are substrings
  of random segments (so common strings are drawn as often as they occur), plus the
  most frequent n-grams (the most matches) and strings that occur nowhere; warm cache
  (after one untimed pass);
* the indexes' size on disk (SQLite: dbstat; PostgreSQL: pg_relation_size) next to the table's;
* the insert cost per job: `Store.complete` of a 1-hour job with its segments (and so
  its index entries) against `Store.complete` without segments, interleaved in the
  same run, on the full database; the extra jobs are deleted again afterwards.
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from bench.common import CACHE, REPO, Result, Target, footer, header, percentile, table

CORPUS = REPO / "bench" / "search_corpus.txt"
# Bump when the generator changes: the cached database is rebuilt.
GENERATOR_VERSION = 5
SEED = 20261127
FULL_HOURS = 10_000
QUICK_HOURS = 500
NAMES = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄婷", "周杰", "吴敏", "徐强", "孙丽", "马超",
         "朱琳", "胡斌", "郭颖", "何涛", "高洁", "林峰", "罗欣", "郑浩", "梁雪", "谢军", "宋佳", "唐亮", "韩梅",
         "冯刚", "邓超", "曹雨", "彭勇", "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry",
         "Iris", "Jack")
# Visitors who speak in one or two recordings only: a search for one of them must not
# walk every match of a common phrase.
GUESTS = tuple(f"访客{i:03d}" for i in range(400))
PUNCTUATION = set("，。？！、：；")


# --- text -------------------------------------------------------------------------------

class CharBigrams:
    """Tokens (a Chinese character, a punctuation mark, or an ASCII word) and, for each,
    how often each token follows it in the corpus."""

    def __init__(self, text: str) -> None:
        tokens = self._tokens(text)
        follow: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for a, b in zip(tokens, tokens[1:]):
            follow[a][b] += 1
        self.next_tokens: dict[str, list[str]] = {}
        self.cumulative: dict[str, list[int]] = {}
        for token, counts in follow.items():
            items = sorted(counts.items())
            self.next_tokens[token] = [t for t, _ in items]
            running, cum = 0, []
            for _, n in items:
                running += n
                cum.append(running)
            self.cumulative[token] = cum
        self.starts = [t for t in tokens if t not in PUNCTUATION and t in self.next_tokens]
        self.distinct_characters = len({t for t in tokens if len(t) == 1 and "\u4e00" <= t <= "\u9fff"})

    @staticmethod
    def _tokens(text: str) -> list[str]:
        out: list[str] = []
        word = ""
        for ch in text:
            if ch.isascii() and ch.isalnum():
                word += ch
                continue
            if word:
                out.append(word)
                word = ""
            if "\u4e00" <= ch <= "\u9fff" or ch in PUNCTUATION:
                out.append(ch)
        if word:
            out.append(word)
        return out

    def sentence(self, rng: random.Random, characters: int) -> str:
        """About `characters` characters, ending with a punctuation mark."""
        token = rng.choice(self.starts)
        parts = [token]
        length = len(token)
        while True:
            choices = self.next_tokens.get(token)
            if not choices:
                token = rng.choice(self.starts)
            else:
                cum = self.cumulative[token]
                token = choices[bisect.bisect_right(cum, rng.random() * cum[-1])]
            if length >= characters and token in PUNCTUATION:
                parts.append("。" if token in "，、：；" else token)
                break
            if token.isascii():
                parts.append(" " + token + " ")
                length += len(token) + 2
            else:
                parts.append(token)
                length += 1
        return "".join(parts).replace("  ", " ").strip()


# --- recordings --------------------------------------------------------------------------

@dataclass(frozen=True)
class FakeSegment:
    """What the store reads from a transcript segment (daemon.transcript.Segment's
    fields), with the speaker's display name already decided."""

    start: float
    end: float
    speaker_label: str
    text: str


def recording_minutes(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.25:
        return rng.uniform(5, 20)  # calls
    if kind < 0.85:
        return rng.uniform(30, 90)  # meetings
    return rng.uniform(90, 180)  # workshops, lectures


def recording(rng: random.Random, model: CharBigrams, minutes: float) -> list[FakeSegment]:
    count = rng.choices((2, 3, 4, 5, 6), weights=(35, 25, 20, 12, 8))[0]
    speakers = [rng.choice(NAMES) if rng.random() < 0.3 else rng.choice(GUESTS) if rng.random() < 0.03
                else f"Speaker{i + 1}" for i in range(count)]
    weights = [rng.uniform(0.3, 1.0) for _ in speakers]
    current = 0
    at = rng.uniform(0, 3)
    end_of_audio = minutes * 60
    out: list[FakeSegment] = []
    while True:
        seconds = min(20.0, max(1.0, rng.lognormvariate(1.55, 0.5)))
        if at + seconds > end_of_audio:
            return out
        characters = max(2, round(seconds * rng.uniform(3.5, 5.5)))
        out.append(FakeSegment(start=round(at, 3), end=round(at + seconds, 3), speaker_label=speakers[current],
                               text=model.sentence(rng, characters)))
        at += seconds + rng.expovariate(1 / 1.6)
        if rng.random() > 0.6:
            current = rng.choices(range(count), weights=weights)[0]


# Recordings are generated in chunks of about this many hours, each from its own seed, so
# that processes can generate them side by side (the same chunks, in the same order).
CHUNK_HOURS = 50
GENERATOR_PROCESSES = 2
_MODEL: list[CharBigrams] = []


def _chunk(task: tuple[int, int, float]) -> list[tuple[str, list[FakeSegment]]]:
    seed, number, hours = task
    if not _MODEL:
        _MODEL.append(CharBigrams(CORPUS.read_text(encoding="utf-8")))
    rng = random.Random(seed * 100_000 + number)
    out: list[tuple[str, list[FakeSegment]]] = []
    total = 0.0
    while total < hours * 60:
        minutes = recording_minutes(rng)
        total += minutes
        out.append((f"meetings/{number:03d}/rec-{len(out) + 1:03d}.m4a", recording(rng, _MODEL[0], minutes)))
    return out


def recordings(seed: int, hours: float, processes: int = 1) -> Iterator[tuple[str, list[FakeSegment]]]:
    """The recordings of `hours` hours, in order; `processes` > 1 generates chunks ahead in
    that many processes (the same recordings either way)."""
    import math

    chunks = max(1, math.ceil(hours / CHUNK_HOURS))
    tasks = [(seed, number, hours / chunks) for number in range(chunks)]
    if processes <= 1:
        for task in tasks:
            yield from _chunk(task)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for part in pool.imap(_chunk, tasks):
            yield from part


# --- the database -------------------------------------------------------------------------

def database_path(hours: float) -> Path:
    return CACHE / f"search-v{GENERATOR_VERSION}-{int(hours)}h.db"


def transcript_of(segments: Sequence[FakeSegment], audio_seconds: float):
    """The recording as the store takes it: a Transcript whose speakers are named as
    each segment shows them."""
    from daemon.transcript import Segment, Transcript

    numbers: dict[str, int] = {}
    for seg in segments:
        numbers.setdefault(seg.speaker_label, len(numbers) + 1)
    return Transcript(segments=tuple(Segment(s.start, s.end, numbers[s.speaker_label], s.text) for s in segments),
                      audio_seconds=audio_seconds, speaker_names={n: label for label, n in numbers.items()})


def _server_cpu_seconds(database: str | None) -> float:
    """CPU seconds spent so far by the local PostgreSQL server's processes connected to
    `database` (0 for SQLite, which works inside this process): the insert cost is also
    measured in CPU time, which the shared VM's load inflates far less than wall time."""
    if database is None:
        return 0.0
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ") + b" "  # "postgres: USER DATABASE HOST(PORT) STATE"
            if not title.startswith(b"postgres: ") or f" {database} ".encode() not in title:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def _complete_job(store, name: str, segments: Sequence[FakeSegment] | None) -> tuple[float, float]:
    """enqueue → claim → complete, as a worker does; returns the seconds `complete` took,
    wall and CPU (this process and, on PostgreSQL, the server's backends of its database)."""
    store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0], sha256=None,
                  size_bytes=1)
    job = store.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=600)
    audio = segments[-1].end if segments else 3600.0
    database = store.engine.url.database if store.is_postgres else None
    t0, c0, s0 = time.perf_counter(), time.process_time(), _server_cpu_seconds(database)
    ok = store.complete(job.id, pid=os.getpid(), audio_seconds=audio, processing_seconds=audio * 0.01, speakers=2,
                        outputs=[], device="cpu", transcript=transcript_of(segments or (), audio))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _server_cpu_seconds(database) - s0
    assert ok, job.id
    return elapsed, cpu


def _done_job(store, name: str, audio_seconds: float) -> int:
    """enqueue → claim → complete without segments (its segments are written in bulk after)."""
    store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0], sha256=None,
                  size_bytes=1)
    job = store.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=600)
    assert store.complete(job.id, pid=os.getpid(), audio_seconds=audio_seconds, processing_seconds=audio_seconds * 0.01,
                          speakers=2, outputs=[], device="cpu"), job.id
    return job.id


# Jobs whose segments go into the database in one transaction while it is built.
BUILD_BATCH_JOBS = 200
FIRST_RECEIVED = dt.datetime(2024, 1, 1)
RECEIVED_SPAN_SECONDS = 3 * 365 * 86400


def fill(url: str, hours: float, label: str) -> dict:
    """The generated recordings into the store at `url`: each job enqueued, claimed and
    completed through the store, then their segments written by the store's own
    `write_segments` (what `Store.complete` calls) for BUILD_BATCH_JOBS jobs per
    transaction (per-job transactions took 232 s per 500 hours on the loaded 2-core VM).
    Jobs are received over three years, in order (the store stamps them all "now")."""
    from daemon.store import Store
    from daemon.store.segments import write_segments

    store = Store(url, host="bench")
    print(f"building {label}: {hours:,.0f} hours of synthetic transcripts through the store …", flush=True)
    started = time.monotonic()
    audio_seconds = 0.0
    counts: list[int] = []
    batch: list[tuple[int, list[FakeSegment]]] = []

    def flush() -> None:
        with store.engine.begin() as conn:
            for job_id, segs in batch:
                write_segments(conn, job_id, transcript_of(segs, segs[-1].end if segs else 0.0))
        batch.clear()

    try:
        for i, (name, segs) in enumerate(recordings(SEED, hours, GENERATOR_PROCESSES)):
            audio = segs[-1].end if segs else 0.0
            batch.append((_done_job(store, name, audio), segs))
            audio_seconds += audio
            counts.append(len(segs))
            if len(batch) >= BUILD_BATCH_JOBS:
                flush()
            if i % 1000 == 999:
                store.checkpoint()
                print(f"  {label}: {i + 1} recordings, {sum(counts):,} segments, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        flush()
        _stamp(store, len(counts))
    finally:
        store.close()
    return {"hours": audio_seconds / 3600, "jobs": len(counts), "segments": sum(counts),
            "build_seconds": time.monotonic() - started, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "segments_per_job_p50": percentile(counts, 50)}


def _stamp(store, count: int) -> None:
    """Jobs 1..count received over three years, in order (the store stamps them all "now")."""
    from sqlalchemy import update

    from daemon.store.schema import jobs

    step = RECEIVED_SPAN_SECONDS / max(1, count)
    with store.engine.begin() as conn:
        for job_id in range(1, count + 1):
            stamp = FIRST_RECEIVED + dt.timedelta(seconds=step * job_id)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(created_at=stamp, started_at=stamp,
                                                                          finished_at=stamp))
    store.checkpoint()


def finish_interrupted(path: Path) -> Path:
    """A build stopped before its end (the busy VM could not finish 10,000 hours in a
    session) kept as the smaller database it is: the jobs whose segments were not written
    yet removed (`Store.remove_jobs`), the rest stamped, its facts written, and the file
    named after its hours (`python -m bench search --hours N` measures it)."""
    import json

    from sqlalchemy import func, select

    from daemon.store import Store
    from daemon.store.schema import jobs, segments

    url = f"sqlite:///{path}"
    store = Store(url, host="bench")
    try:
        store.remove_jobs(store.done_jobs_without_segments())
        with store.engine.connect() as conn:
            count, audio = conn.execute(select(func.count(), func.sum(jobs.c.audio_seconds))).one()
            rows = conn.execute(select(func.count()).select_from(segments)).scalar()
            per_job = [n for (n,) in conn.execute(select(func.count()).select_from(segments)
                                                  .group_by(segments.c.job_id))]
        _stamp(store, int(count))
    finally:
        store.close()
    _pending_grams(url)
    hours = float(audio) / 3600
    target = database_path(round(hours))
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            Path(f"{path}{suffix}").rename(Path(f"{target}{suffix}"))
    facts = {"hours": hours, "jobs": int(count), "segments": int(rows), "interrupted_build_of": path.name,
             "build_seconds": float("nan"), "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
             "segments_per_job_p50": percentile(per_job, 50)}
    target.with_suffix(".json").write_text(json.dumps(facts, indent=2))
    print(f"kept {target.name}: {hours:,.0f} hours, {count} jobs, {rows:,} segments", flush=True)
    return target


def _defer_grams(url: str) -> None:
    """The index of grams left to migration 0010's backfill (timed after the build, its
    rate is `spkd db upgrade`'s estimate): a `search_backfill` row covering every id
    makes the store skip the grams while it writes (daemon.store.segments.index_grams)."""
    from sqlalchemy import delete, insert

    from daemon.store import Store
    from daemon.store.schema import search_backfill
    from daemon.store.segments import GRAMS_BACKFILL

    store = Store(url, host="bench")
    try:
        with store.engine.begin() as conn:
            conn.execute(delete(search_backfill).where(search_backfill.c.name == GRAMS_BACKFILL))
            conn.execute(insert(search_backfill).values(name=GRAMS_BACKFILL, done_id=-1, last_id=2**62, done_rows=0,
                                                        total_rows=0))
    finally:
        store.close()


def _pending_grams(url: str) -> int:
    """The deferred backfill's row made exact (the build's last id and count); the count."""
    from sqlalchemy import func, select, update

    from daemon.store import Store
    from daemon.store.schema import search_backfill, segments
    from daemon.store.segments import GRAMS_BACKFILL

    store = Store(url, host="bench")
    try:
        with store.engine.begin() as conn:
            count, last = conn.execute(select(func.count(), func.max(segments.c.id))).one()
            conn.execute(update(search_backfill).where(search_backfill.c.name == GRAMS_BACKFILL)
                         .values(last_id=last, total_rows=count))
        return int(count)
    finally:
        store.close()


def build(path: Path, hours: float) -> dict:
    """The SQLite database, through the real migration and store; returns build figures
    (cached beside it). Its index of grams is then built by the backfill (sqlite_backfill)."""
    import json

    from daemon.store.db import migrate

    facts_path = path.with_suffix(".json")
    if path.exists() and facts_path.exists():
        return json.loads(facts_path.read_text())
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    _defer_grams(url)
    facts = fill(url, hours, path.name)
    _pending_grams(url)
    facts_path.write_text(json.dumps(facts, indent=2))
    return facts


# --- queries ------------------------------------------------------------------------------

LENGTHS = (1, 2, 3, 4, 8)
# Chinese characters the generator never writes (its vocabulary is the corpus's): 1-character
# queries that occur nowhere.
RARE = "龘靐齉爨麤鬱纛鸞驫灩"


def _is_word_text(text: str) -> bool:
    return all("\u4e00" <= ch <= "\u9fff" for ch in text)


def query_sets(path: Path, rng: random.Random, per_length: int) -> dict[int, list[tuple[str, str]]]:
    """{length: [(kind, query)]}: `sampled` substrings of random segments, the most
    `frequent` n-grams of a sample, and `absent` strings (of common characters; of
    characters never written, for one character)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        max_id = conn.execute("select max(id) from segments").fetchone()[0]
        texts: list[str] = []
        while len(texts) < 20000:
            row = conn.execute("select text from segments where id >= ? order by id limit 1",
                               (rng.randrange(max_id),)).fetchone()
            if row:
                texts.append(row[0])
    finally:
        conn.close()
    characters = collections.Counter(ch for t in texts for ch in t if _is_word_text(ch))
    common = [ch for ch, _ in characters.most_common(200)]
    joined = "\n".join(texts)
    out: dict[int, list[tuple[str, str]]] = {}
    for length in LENGTHS:
        grams = collections.Counter(joined[i:i + length] for i in range(len(joined) - length)
                                    if _is_word_text(joined[i:i + length]))
        chosen: list[tuple[str, str]] = [("frequent", g) for g, _ in grams.most_common(per_length // 6)]
        while len(chosen) < per_length * 5 // 6:
            text = rng.choice(texts)
            if len(text) <= length:
                continue
            at = rng.randrange(len(text) - length)
            piece = text[at:at + length]
            if _is_word_text(piece):
                chosen.append(("sampled", piece))
        tries = 0
        while len(chosen) < per_length:
            tries += 1
            piece = rng.choice(RARE) if length == 1 else "".join(rng.choice(common) for _ in range(length))
            if piece not in joined and (piece not in {q for _, q in chosen} or tries > 10000):
                chosen.append(("absent", piece))
        out[length] = chosen
    return out


def time_queries(store, queries: list[tuple[str, str]], *, speaker_of: dict[str, str | None],
                 since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict]:
    from daemon.store.search import search

    rows = []
    for kind, query in queries:
        t0 = time.perf_counter()
        result = search(store, query, speaker=speaker_of.get(query), since=since, until=until)
        rows.append({"kind": kind, "query": query, "seconds": time.perf_counter() - t0, "hits": len(result.hits),
                     "more": result.more, "notes": result.notes})
    return rows


def latency_rows(store, sets: dict[int, list[tuple[str, str]]], seed: int,
                 last_received: dt.datetime) -> list[dict]:
    """Per query length: no filter, `--speaker` (half the queries a regular, half a
    guest), `--since` (the last 90 days) and `--until` (the first year)."""
    rng = random.Random(seed)  # the same speakers on every backend
    out = []
    for length, queries in sets.items():
        variants: list[tuple[str, dict]] = [
            ("", {}), ("--speaker", {"speaker": True}),
            ("--since 90 days", {"since": last_received - dt.timedelta(days=90)}),
            ("--until first year", {"until": last_received - dt.timedelta(days=2 * 365)})]
        for label, options in variants:
            speakers = {q: (rng.choice(NAMES) if i % 2 else rng.choice(GUESTS)) if options.get("speaker") else None
                        for i, (_, q) in enumerate(queries)}
            window = {"since": options.get("since"), "until": options.get("until")}
            time_queries(store, queries, speaker_of=speakers, **window)  # warm the cache, untimed
            timed = time_queries(store, queries, speaker_of=speakers, **window)
            seconds = [r["seconds"] for r in timed]
            worst = max(timed, key=lambda r: r["seconds"])
            out.append({"length": length, "filter": label, "queries": len(timed),
                        "p50_ms": percentile(seconds, 50) * 1000, "p99_ms": percentile(seconds, 99) * 1000,
                        "max_ms": worst["seconds"] * 1000, "worst": f"{worst['kind']} {worst['query']}",
                        "full_pages": sum(1 for r in timed if r["more"]),
                        "empty": sum(1 for r in timed if r["hits"] == 0),
                        "notes": sum(1 for r in timed if r["notes"])})
    return out


def last_received(path: Path) -> dt.datetime:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dt.datetime.fromisoformat(conn.execute("select max(created_at) from jobs").fetchone()[0])
    finally:
        conn.close()


# --- the backfill of migration 0010 -----------------------------------------------------------

def sqlite_backfill(path: Path, facts: dict) -> dict:
    """The FTS5 table of grams built by the backfill (emptied first where the build wrote
    it), timed (cached in the facts)."""
    import json

    from daemon.store import Store
    from daemon.store.segments import GRAMS_BACKFILL

    if "backfill_seconds" in facts:
        return facts
    store = Store(f"sqlite:///{path}", host="bench")
    try:
        with store.engine.begin() as conn:
            count, last = conn.exec_driver_sql("select count(*), max(id) from segments").one()
            deferred = conn.exec_driver_sql("select 1 from search_backfill where name = ?", (GRAMS_BACKFILL,)).first()
            if deferred is None:  # a database built before the build deferred the grams
                conn.exec_driver_sql("insert into segments_grams(segments_grams) values ('delete-all')")
                conn.exec_driver_sql("insert into search_backfill (name, done_id, last_id, done_rows, total_rows) "
                                     "values (?, -1, ?, 0, ?)", (GRAMS_BACKFILL, last, count))
        print(f"  backfill (migration 0010) of {count:,} segments on SQLite …", flush=True)
        batches: list[float] = []
        t0 = time.monotonic()
        mark = [t0]

        def progress(_state) -> None:
            now = time.monotonic()
            batches.append(now - mark[0])
            mark[0] = now

        store.backfill_search_index(progress)
        facts["backfill_seconds"] = time.monotonic() - t0
        facts["backfill_rows"] = count
        facts["backfill_batches"] = len(batches) + 1
        facts["backfill_batch_max_s"] = max(batches, default=0.0)
        store.checkpoint()
    finally:
        store.close()
    path.with_suffix(".json").write_text(json.dumps(facts, indent=2))
    return facts


# --- PostgreSQL ------------------------------------------------------------------------------

PG_CLUSTER = Path("/var/tmp/spkd-bench-pg")


def postgres_server():
    """The private server of tests/support/postgres.py, with its cluster kept under
    PG_CLUSTER between runs (the copied database takes minutes to build)."""
    import tests.support.postgres as pg

    server = pg.PostgresServer()
    server._bin = pg.find_bin_dir()
    if server._bin is None:
        raise pg.Unavailable("no pg_ctl")
    if os.geteuid() == 0:
        import shutil

        runuser = shutil.which("runuser")
        server._run_as = [runuser, "-u", "postgres", "--"] if runuser else []
    server.data_dir = PG_CLUSTER
    port = 54329
    if not (PG_CLUSTER / "data").exists():
        PG_CLUSTER.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(PG_CLUSTER, owner.pw_uid, owner.pw_gid)
        server._pg("initdb", "-D", str(PG_CLUSTER / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--no-sync", "--locale=C.UTF-8")
    server._options = (f"-p {port} -k {PG_CLUSTER} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=2GB "
                       "-c max_wal_size=8GB -c maintenance_work_mem=512MB")
    server.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        server._check(wait_seconds=1)  # still running from an interrupted run
    except pg.Unavailable:
        server.resume()
        server._check()
    return server


def build_pg(server, path: Path, hours: float) -> tuple[str, dict]:
    """The SQLite database's jobs and segments (the store's rows of the same generated
    recordings) copied into PostgreSQL (cached in the cluster): generating and writing
    them a second time through the store costs the busy 2-core VM an hour more at 10,000
    hours. Then its indexes built: the trigram index by CREATE INDEX, the index of grams
    by migration 0010's backfill (`Store.backfill_search_index`: CREATE INDEX
    CONCURRENTLY), both timed."""
    import json

    import psycopg
    from sqlalchemy.engine import make_url

    from daemon.store import Store
    from daemon.store.db import migrate
    from daemon.store.segments import GRAMS_BACKFILL

    name = f"bench_{path.stem.replace('-', '_')}"
    url = make_url(server.url).set(database=name).render_as_string(hide_password=False)
    facts_path = PG_CLUSTER / f"{name}.json"
    if facts_path.exists():
        return url, json.loads(facts_path.read_text())
    admin = server.libpq_url(server.url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE \'C.UTF-8\'')
    migrate(url)
    print(f"copying {path.name} into PostgreSQL …", flush=True)
    started = time.monotonic()
    lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    facts: dict = {}
    try:
        with psycopg.connect(server.libpq_url(url), autocommit=True) as conn:
            conn.execute("DROP INDEX ix_segments_folded_text_trgm")
            conn.execute("DROP INDEX ix_segments_grams")
            for name_ in ("jobs", "segments"):
                columns = [r[1] for r in lite.execute(f"pragma table_info({name_})")]
                with conn.cursor().copy(f"COPY {name_} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in lite.execute(f"select {', '.join(columns)} from {name_} order by id"):
                        copy.write_row(row)
            conn.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs))")
            facts["copy_seconds"] = time.monotonic() - started
            print(f"  copied in {facts['copy_seconds']:.0f} s; trigram index …", flush=True)
            t0 = time.monotonic()
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("CREATE INDEX ix_segments_folded_text_trgm ON segments USING gin (folded_text gin_trgm_ops)")
            facts["trigram_index_seconds"] = time.monotonic() - t0
            count, last = conn.execute("SELECT count(*), max(id) FROM segments").fetchone()
            conn.execute("INSERT INTO search_backfill (name, done_id, last_id, done_rows, total_rows) "
                         "VALUES (%s, -1, %s, 0, %s)", (GRAMS_BACKFILL, last, count))
        print(f"  backfill (migration 0010) of {count:,} segments on PostgreSQL …", flush=True)
        store = Store(url, host="bench")
        try:
            t0 = time.monotonic()
            store.backfill_search_index(lambda state: print(f"    {state.describe()}", flush=True))
            facts["backfill_seconds"] = time.monotonic() - t0
            facts["backfill_rows"] = count
        finally:
            store.close()
        with psycopg.connect(server.libpq_url(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    finally:
        lite.close()
    facts["build_seconds"] = time.monotonic() - started
    facts_path.write_text(json.dumps(facts, indent=2))
    return url, facts


def pg_sizes(url: str) -> dict[str, int]:
    from daemon.store import Store

    store = Store(url, host="bench")
    try:
        with store.engine.connect() as conn:
            size = lambda rel: int(conn.exec_driver_sql(f"SELECT pg_relation_size('{rel}')").scalar())  # noqa: E731
            return {"database": int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()),
                    "segments": size("segments") + int(conn.exec_driver_sql(
                        "SELECT coalesce(pg_relation_size(reltoastrelid), 0) FROM pg_class "
                        "WHERE relname = 'segments'").scalar()),
                    "trigram": size("ix_segments_folded_text_trgm"), "grams": size("ix_segments_grams"),
                    "segments_job_index": size("ix_segments_job_id"), "speaker_index": size("ix_segments_speaker_key")}
    finally:
        store.close()


def sqlite_sizes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("select name, sum(pgsize) from dbstat group by name").fetchall()
    finally:
        conn.close()
    by_name = {name: int(size) for name, size in rows}
    return {"database": path.stat().st_size, "segments": by_name.get("segments", 0),
            "trigram": sum(v for k, v in by_name.items() if k.startswith("segments_fts")),
            "grams": sum(v for k, v in by_name.items() if k.startswith("segments_grams")),
            "segments_job_index": by_name.get("ix_segments_job_id", 0), "speaker_index": 0}


# --- insert cost --------------------------------------------------------------------------

def insert_cost(url: str, rng: random.Random, pairs: int) -> dict:
    """`complete` of a ~1-hour job with its segments against `complete` without any,
    interleaved, on the full database; the jobs are deleted again afterwards (through
    the store's own delete, which takes their index entries too)."""
    from sqlalchemy import delete, select

    from daemon.store import Store
    from daemon.store.schema import job_events, jobs
    from daemon.store.segments import delete_segments

    model = CharBigrams(CORPUS.read_text(encoding="utf-8"))
    store = Store(url, host="bench-insert")
    with_rows: list[float] = []
    without: list[float] = []
    cpu_with: list[float] = []
    cpu_without: list[float] = []
    counts: list[int] = []
    try:
        for i in range(pairs):
            segments = recording(rng, model, 60.0)
            counts.append(len(segments))
            order = [True, False] if i % 2 == 0 else [False, True]
            for indexed in order:
                seconds, cpu = _complete_job(store, f"insert-cost/{i}-{int(indexed)}.m4a",
                                             segments if indexed else None)
                (with_rows if indexed else without).append(seconds)
                (cpu_with if indexed else cpu_without).append(cpu)
    finally:
        with store.engine.begin() as conn:
            ids = list(conn.execute(select(jobs.c.id).where(jobs.c.host == "bench-insert")).scalars())
            delete_segments(conn, ids)
            conn.execute(delete(job_events).where(job_events.c.job_id.in_(ids)))
            conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
        store.checkpoint()
        store.close()
    odd, even = without[1::2], without[0::2]
    return {"pairs": pairs, "segments_p50": percentile(counts, 50),
            "with_p50_ms": percentile(with_rows, 50) * 1000, "with_p90_ms": percentile(with_rows, 90) * 1000,
            "without_p50_ms": percentile(without, 50) * 1000, "without_p90_ms": percentile(without, 90) * 1000,
            "noise_ms": abs(percentile(odd, 50) - percentile(even, 50)) * 1000,
            "cpu_extra_p50_ms": (percentile(cpu_with, 50) - percentile(cpu_without, 50)) * 1000}


# --- the benchmark ----------------------------------------------------------------------

P99_TARGET_MS = 50.0
EXTRA_COMPLETE_TARGET_MS = 60.0


def main(quick: bool = False, hours: float | None = None) -> Result:
    from daemon.store import Store

    hours = hours or (QUICK_HOURS if quick else FULL_HOURS)
    per_length = 30 if quick else 120
    started = header("search", quick, f"full-text search over {hours:,} hours of synthetic Chinese transcripts "
                                      "(SQLite FTS5, PostgreSQL pg_trgm + GIN of grams)")
    path = database_path(hours)
    facts = build(path, hours)
    facts = sqlite_backfill(path, facts)
    backends: list[tuple[str, str, dict, dict]] = [
        ("SQLite", f"sqlite:///{path}", {"build_seconds": facts["build_seconds"],
                                         "backfill_seconds": facts["backfill_seconds"]}, {})]
    server = None
    try:
        server = postgres_server()
        pg_url, pg_facts = build_pg(server, path, hours)
        backends.append(("PostgreSQL", pg_url, pg_facts, {}))
    except Exception as exc:  # noqa: BLE001 - measured where it can be; said where not
        print(f"PostgreSQL not measured: {exc}", flush=True)
    result = Result("search")
    try:
        sets = query_sets(path, random.Random(SEED + 1), per_length)
        newest = last_received(path)
        size_rows, latency, cost_rows = [], [], []
        for name, url, built, _ in backends:
            size = sqlite_sizes(path) if name == "SQLite" else pg_sizes(url)
            rate = facts["segments"] / built["backfill_seconds"]
            size_rows.append([name, facts["hours"], facts["segments"], size["database"] / 2**20,
                              size["segments"] / 2**20, size["trigram"] / 2**20, size["grams"] / 2**20,
                              built["backfill_seconds"], rate])
            result.ratio(f"{name}: index of grams / segments table", size["grams"] / max(1, size["segments"]))
            result.ratio(f"{name}: backfill rate, segments per second", rate)
            store = Store(url, host="bench")
            try:
                for r in latency_rows(store, sets, SEED + 2, newest):
                    latency.append([name, r["length"], r["filter"] or "none", r["queries"], r["p50_ms"],
                                    r["p99_ms"], r["max_ms"], r["worst"], r["full_pages"], r["empty"], r["notes"]])
                    result.targets.append(Target(
                        f"{name} search p99, {r['length']} chars{' ' + r['filter'] if r['filter'] else ''}",
                        r["p99_ms"], P99_TARGET_MS, False, " ms"))
            finally:
                store.close()
            cost = insert_cost(url, random.Random(SEED + 3), pairs=10 if quick else 30)
            extra = cost["with_p50_ms"] - cost["without_p50_ms"]
            cost_rows.append([name, cost["pairs"], cost["segments_p50"], cost["with_p50_ms"], cost["with_p90_ms"],
                              cost["without_p50_ms"], cost["without_p90_ms"], extra, cost["noise_ms"],
                              cost["cpu_extra_p50_ms"]])
            result.targets.append(Target(f"{name}: extra Store.complete time of a 1-hour job (p50)", extra,
                                         EXTRA_COMPLETE_TARGET_MS, False, " ms"))
            result.targets.append(Target(f"{name}: extra Store.complete CPU of a 1-hour job (p50)",
                                         cost["cpu_extra_p50_ms"], EXTRA_COMPLETE_TARGET_MS, False, " ms"))
        table("Database and indexes", ["backend", "hours", "segments", "database MB", "segments table MB",
                                       "trigram index MB", "grams index MB", "grams backfill s",
                                       "backfill segments/s"], size_rows)
        table("Search latency, first page of 20 hits (warm cache)",
              ["backend", "chars", "filter", "queries", "p50 ms", "p99 ms", "max ms", "slowest query", "full pages",
               "no hit", "with a note"], latency)
        table("Insert cost per job on the full database: Store.complete of a 1-hour job",
              ["backend", "pairs", "segments", "with segments p50 ms", "p90 ms", "without p50 ms", "p90 ms",
               "extra p50 ms", "noise (halves) ms", "extra CPU p50 ms"], cost_rows)
        if "backfill_batch_max_s" in facts:
            result.notes.append(f"SQLite backfill: {facts['backfill_batches']} batches, the longest held the write "
                                f"lock {facts['backfill_batch_max_s'] * 1000:.0f} ms (with its pause)")
    finally:
        if server is not None:
            server.pause()
    result.notes.append(f"vocabulary {CharBigrams(CORPUS.read_text()).distinct_characters} distinct characters (real "
                        "speech uses several thousand: common strings match more segments here than they would "
                        "in real transcripts)")
    result.report()
    footer("search", started)
    return result


def build_only(backend: str, hours: float) -> None:
    """`python -m bench.search --build sqlite|postgresql [--quick]`: one backend's database
    built into the caches and nothing measured, so that the two builds can run side by
    side (each is one process, mostly one core) before `python -m bench search`."""
    path = database_path(hours)
    if backend == "sqlite":
        sqlite_backfill(path, build(path, hours))
        return
    server = postgres_server()
    try:
        build_pg(server, path, hours)
    finally:
        server.pause()


if __name__ == "__main__":
    import sys

    if {"-h", "--help"} & set(sys.argv):
        print(__doc__)
        print("usage: python -m bench.search [--quick] [--hours N] [--build sqlite|postgresql] [--finish-interrupted]")
        raise SystemExit(0)
    quick = "--quick" in sys.argv
    hours = float(sys.argv[sys.argv.index("--hours") + 1]) if "--hours" in sys.argv else None
    if "--finish-interrupted" in sys.argv:
        finish_interrupted(database_path(hours or FULL_HOURS))
    elif "--build" in sys.argv:
        build_only(sys.argv[sys.argv.index("--build") + 1], hours or (QUICK_HOURS if quick else FULL_HOURS))
    else:
        main(quick=quick, hours=hours)
