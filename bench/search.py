"""5. Search: full-text search over 10,000 hours of transcripts (about 5 million segments).

The database is built once through the real store (`enqueue` → `claim` → `complete`
with the job's segments, the migration's FTS5 triggers indexing them in the same
transaction) and cached under bench/.cache (several GB, rebuilt when the generator
changes). Text: Chinese sentences from a character bigram table counted from
bench/search_corpus.txt (text written for this benchmark; a few English words mixed
in), at 3.5-5.5 characters per second of speech; segments of 1-20 s with pauses, about
one per 7 s; recordings of 5-180 minutes with 2-6 speakers, some of them named from a
pool of 40 (a voice library would name them), a few guests from a pool of 400 (each
in one or two recordings), the rest Speaker1, Speaker2, …;
received over three years (`jobs.created_at` spread after the build).

Then, on that database:

* search latency (`daemon.store.search.search`, the CLI's path less printing, first page of
  20 hits) for 3-, 4- and 8-character queries, with and without `--speaker`: queries
  are substrings of random segments (so common strings are drawn as often as they
  occur), plus the most frequent 3-grams (the most matches) and strings that occur
  nowhere; warm cache (after one untimed pass);
* the index size on disk (dbstat) next to the table's;
* the insert cost per job: `Store.complete` of a 1-hour job with its segments (and so
  the FTS5 index) against `Store.complete` without segments (the completion as it was
  before segments existed), interleaved in the same run, on the full database; the
  extra jobs are deleted again afterwards.
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
GENERATOR_VERSION = 2
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


def recordings(seed: int, hours: float) -> Iterator[tuple[str, list[FakeSegment]]]:
    rng = random.Random(seed)
    model = CharBigrams(CORPUS.read_text(encoding="utf-8"))
    total = 0.0
    n = 0
    while total < hours * 60:
        minutes = recording_minutes(rng)
        total += minutes
        n += 1
        yield f"meetings/{n // 1000:02d}/rec-{n:05d}.m4a", recording(rng, model, minutes)


# --- the database -------------------------------------------------------------------------

def database_path(hours: float) -> Path:
    return CACHE / f"search-v{GENERATOR_VERSION}-{int(hours)}h.db"


def _complete_job(store, name: str, segments: Sequence[FakeSegment] | None) -> float:
    """enqueue → claim → complete, as a worker does; returns the seconds `complete` took."""
    store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0], sha256=None,
                  size_bytes=1)
    job = store.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=600)
    audio = segments[-1].end if segments else 3600.0
    t0 = time.perf_counter()
    ok = store.complete(job.id, pid=os.getpid(), audio_seconds=audio, processing_seconds=audio * 0.01, speakers=2,
                        outputs=[], device="cpu", segments=segments or ())
    elapsed = time.perf_counter() - t0
    assert ok, job.id
    return elapsed


def build(path: Path, hours: float) -> dict:
    """The database, through the real migration and store; returns build figures (cached
    beside it)."""
    import json

    from daemon.store.db import migrate
    from daemon.store import Store

    facts_path = path.with_suffix(".json")
    if path.exists() and facts_path.exists():
        return json.loads(facts_path.read_text())
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    store = Store(url, host="bench")
    print(f"building {path.name}: {hours:,.0f} hours of synthetic transcripts through Store.complete …", flush=True)
    started = time.monotonic()
    complete_seconds: list[tuple[int, float]] = []
    audio_seconds = 0.0
    for i, (name, segments) in enumerate(recordings(SEED, hours)):
        complete_seconds.append((len(segments), _complete_job(store, name, segments)))
        audio_seconds += segments[-1].end if segments else 0.0
        if i % 500 == 499:
            store.checkpoint()
            print(f"  {i + 1} recordings, {sum(n for n, _ in complete_seconds):,} segments, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    store.checkpoint()
    store.close()
    # Received over three years, in order (the store stamps them all "now").
    conn = sqlite3.connect(path)
    first = dt.datetime(2024, 1, 1)
    jobs = conn.execute("select max(id) from jobs").fetchone()[0]
    step = (3 * 365 * 86400) / max(1, jobs)
    with conn:
        for job_id in range(1, jobs + 1):
            stamp = (first + dt.timedelta(seconds=step * job_id)).isoformat(sep=" ")
            conn.execute("update jobs set created_at = ?, started_at = ?, finished_at = ? where id = ?",
                         (stamp, stamp, stamp, job_id))
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    per_job = [s for _, s in complete_seconds]
    tenth = max(1, len(per_job) // 10)
    facts = {"hours": audio_seconds / 3600, "jobs": len(per_job), "segments": sum(n for n, _ in complete_seconds),
             "build_seconds": time.monotonic() - started, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
             "complete_ms_first_tenth_p50": percentile(per_job[:tenth], 50) * 1000,
             "complete_ms_last_tenth_p50": percentile(per_job[-tenth:], 50) * 1000,
             "complete_ms_last_tenth_p99": percentile(per_job[-tenth:], 99) * 1000,
             "segments_per_job_p50": percentile([n for n, _ in complete_seconds], 50)}
    facts_path.write_text(json.dumps(facts, indent=2))
    return facts


def sizes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("select name, sum(pgsize) from dbstat group by name").fetchall()
    finally:
        conn.close()
    by_name = {name: int(size) for name, size in rows}
    fts = sum(size for name, size in by_name.items() if name.startswith("segments_fts"))
    return {"file": path.stat().st_size, "fts": fts, "segments": by_name.get("segments", 0),
            "segments_job_index": by_name.get("ix_segments_job_id", 0), "jobs": by_name.get("jobs", 0)}


# --- queries ------------------------------------------------------------------------------

def _is_word_text(text: str) -> bool:
    return all("\u4e00" <= ch <= "\u9fff" for ch in text)


def query_sets(path: Path, rng: random.Random, per_length: int) -> dict[int, list[tuple[str, str]]]:
    """{length: [(kind, query)]}: `sampled` substrings of random segments, the most
    `frequent` n-grams of a sample, and `absent` strings of common characters."""
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
    for length in (3, 4, 8):
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
        while len(chosen) < per_length:
            piece = "".join(rng.choice(common) for _ in range(length))
            if piece not in joined:
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
                     "more": result.more})
    return rows


def latency_rows(store, sets: dict[int, list[tuple[str, str]]], rng: random.Random,
                 last_received: dt.datetime) -> list[dict]:
    """Per query length: no filter, `--speaker` (half the queries a regular, half a
    guest), and for 3 characters `--since` (the last 90 days) and `--until` (the
    first year)."""
    out = []
    for length, queries in sets.items():
        variants: list[tuple[str, dict]] = [("", {}), ("--speaker", {"speaker": True})]
        if length == 3:
            variants += [("--since 90 days", {"since": last_received - dt.timedelta(days=90)}),
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
                        "empty": sum(1 for r in timed if r["hits"] == 0)})
    return out


def last_received(path: Path) -> dt.datetime:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dt.datetime.fromisoformat(conn.execute("select max(created_at) from jobs").fetchone()[0])
    finally:
        conn.close()


def match_counts(path: Path, queries: Sequence[str]) -> dict[str, int]:
    """How many segments contain each query in all (what the index must not walk)."""
    from daemon.store.search import parse_query

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {q: conn.execute("select count(*) from segments_fts where segments_fts match ?",
                                (parse_query(q).fts5_phrase,)).fetchone()[0] for q in queries}
    finally:
        conn.close()


# --- insert cost --------------------------------------------------------------------------

def insert_cost(path: Path, rng: random.Random, pairs: int) -> dict:
    """`complete` of a ~1-hour job with its segments against `complete` without any,
    interleaved, on the full database; the jobs are deleted again afterwards."""
    from daemon.store import Store

    model = CharBigrams(CORPUS.read_text(encoding="utf-8"))
    store = Store(f"sqlite:///{path}", host="bench-insert")
    with_rows: list[float] = []
    without: list[float] = []
    counts: list[int] = []
    try:
        for i in range(pairs):
            segments = recording(rng, model, 60.0)
            counts.append(len(segments))
            order = [True, False] if i % 2 == 0 else [False, True]
            for indexed in order:
                seconds = _complete_job(store, f"insert-cost/{i}-{int(indexed)}.m4a", segments if indexed else None)
                (with_rows if indexed else without).append(seconds)
    finally:
        store.close()
        conn = sqlite3.connect(path)
        with conn:
            ids = [r[0] for r in conn.execute("select id from jobs where host = 'bench-insert'")]
            marks = ",".join("?" * len(ids))
            conn.execute(f"delete from segments where job_id in ({marks})", ids)
            conn.execute(f"delete from job_events where job_id in ({marks})", ids)
            conn.execute(f"delete from jobs where id in ({marks})", ids)
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.close()
    odd, even = without[1::2], without[0::2]
    return {"pairs": pairs, "segments_p50": percentile(counts, 50),
            "with_p50_ms": percentile(with_rows, 50) * 1000, "with_p90_ms": percentile(with_rows, 90) * 1000,
            "without_p50_ms": percentile(without, 50) * 1000, "without_p90_ms": percentile(without, 90) * 1000,
            "noise_ms": abs(percentile(odd, 50) - percentile(even, 50)) * 1000}


# --- the benchmark ----------------------------------------------------------------------

def main(quick: bool = False) -> Result:
    from daemon.store.search import search as run_search
    from daemon.store import Store

    hours = QUICK_HOURS if quick else FULL_HOURS
    per_length = 30 if quick else 120
    started = header("search", quick, f"full-text search over {hours:,} hours of synthetic Chinese transcripts "
                                      "(SQLite FTS5 trigram)")
    path = database_path(hours)
    facts = build(path, hours)
    rng = random.Random(SEED + 1)
    size = sizes(path)
    table("Database", ["hours", "recordings", "segments", "file MB", "FTS5 index MB", "segments table MB",
                       "ix_segments_job_id MB", "build s", "complete ms p50 (first/last tenth)"],
          [[facts["hours"], facts["jobs"], facts["segments"], size["file"] / 2**20, size["fts"] / 2**20,
            size["segments"] / 2**20, size["segments_job_index"] / 2**20, facts["build_seconds"],
            f"{facts['complete_ms_first_tenth_p50']:.1f} / {facts['complete_ms_last_tenth_p50']:.1f}"]])
    sets = query_sets(path, rng, per_length)
    store = Store(f"sqlite:///{path}", host="bench")
    try:
        rows = latency_rows(store, sets, rng, last_received=last_received(path))
        table("Search latency, first page of 20 hits (warm cache)",
              ["chars", "filter", "queries", "p50 ms", "p99 ms", "max ms", "slowest query", "full pages",
               "no hit"],
              [[r["length"], r["filter"] or "none", r["queries"], r["p50_ms"], r["p99_ms"], r["max_ms"],
                r["worst"], r["full_pages"], r["empty"]] for r in rows])
        frequent = [q for kind, q in sets[3] if kind == "frequent"][:5]
        counts = match_counts(path, frequent)
        timed = []
        for q in frequent:
            t0 = time.perf_counter()
            run_search(store, q)
            timed.append([q, counts[q], (time.perf_counter() - t0) * 1000])
        table("The most frequent 3-grams: segments containing them, and the first page", ["query", "segments",
              "ms"], timed)
        fallback = []
        for q in ("预算", "的", "机器", "KPI", "ab"):
            t0 = time.perf_counter()
            result = run_search(store, q)
            fallback.append([q, len(result.hits), (time.perf_counter() - t0) * 1000])
        table("1-2 character queries (LIKE over every segment, no target)", ["query", "hits", "ms"], fallback)
    finally:
        store.close()
    cost = insert_cost(path, rng, pairs=10 if quick else 30)
    table("Insert cost per job on the full database: Store.complete of a 1-hour job",
          ["pairs", "segments", "with segments p50 ms", "p90 ms", "without p50 ms", "p90 ms", "noise (halves) ms"],
          [[cost["pairs"], cost["segments_p50"], cost["with_p50_ms"], cost["with_p90_ms"], cost["without_p50_ms"],
            cost["without_p90_ms"], cost["noise_ms"]]])
    result = Result("search")
    worst_p99 = max(r["p99_ms"] for r in rows)
    result.ratio("segments per hour", facts["segments"] / max(1.0, facts["hours"]))
    result.ratio("FTS5 index / segments table", size["fts"] / max(1, size["segments"]))
    result.ratio("complete with segments / without (p50)", cost["with_p50_ms"] / cost["without_p50_ms"])
    # A 1-hour recording on one H200 takes ~29 s (RTF 0.0081, BENCHMARKS.md): the extra
    # time of writing its segments, as a share of the job.
    extra_share = (cost["with_p50_ms"] - cost["without_p50_ms"]) / 1000 / 29.0
    result.ratio("extra completion time / a 1-hour job on an H200 (29 s)", extra_share)
    for r in rows:
        result.targets.append(Target(f"search p99, {r['length']} chars{' ' + r['filter'] if r['filter'] else ''}",
                                     r["p99_ms"], 100.0, False, " ms"))
    result.targets.append(Target("extra completion time of a 1-hour job, share of the job (H200)", extra_share * 100,
                                 1.0, False, " %"))
    result.notes.append(f"worst p99 {worst_p99:.1f} ms; vocabulary {CharBigrams(CORPUS.read_text()).distinct_characters} "
                        "distinct characters (real speech uses several thousand: common strings match more "
                        "segments here than they would in real transcripts)")
    result.report()
    footer("search", started)
    return result


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
