"""Finding what was said: full-text search over the segments of every done job.

The store holds the rows (`segments`, written in the transaction that marks a job
done) and runs the queries; this module holds the rules that are not SQL:

* **What matches.** A query is literal text, searched for as a substring of one
  segment: quotes, `*`, `NEAR`, `AND`, `'`, `%`, `_` and backslashes are characters
  like any other, never query syntax. Case and width do not matter: both the text
  and the query are compared in their `fold`ed form (Unicode NFKC, then case
  folding), so `KPI`, `kpi` and full-width `ＫＰＩ` are one word, and full-width
  punctuation equals its ASCII form (`，` is `,`, `？` is `?`); Chinese characters,
  `。` and `、` are unchanged by it. The original text is what is shown.
* **How.** Queries of 3 or more (folded) characters go through the trigram index
  (SQLite FTS5, PostgreSQL pg_trgm). Queries of 1–2 characters, which no trigram can
  look up, go through a second index of every segment's character unigrams and
  bigrams (`grams`): SQLite's FTS5 table `segments_grams` (one trigram stands for each
  gram, `gram_document`), PostgreSQL's GIN index over `spkd_grams(folded_text)` (migration
  0010). Only while that index is still being filled in (after the migration, on a
  large database) are they compared with every segment by `LIKE` (the result says so).
* **Order.** Newest recordings first (by job, i.e. by when spkd received them),
  then by time in the recording.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from daemon.errors import SearchQueryError

if TYPE_CHECKING:
    from daemon.store import Store

__all__ = [
    "DEFAULT_LIMIT",
    "LIKE_ESCAPE",
    "MIN_INDEXED_CHARACTERS",
    "PG_LOCALE_NOTE",
    "Hit",
    "SearchQuery",
    "SearchResult",
    "fold",
    "gram_document",
    "gram_token",
    "grams",
    "hms",
    "mark",
    "match_spans",
    "parse_date_bound",
    "parse_query",
    "search",
    "speaker_key",
    "speaker_token",
    "fts5_string",
]

# The trigram index finds substrings of at least this many characters; shorter ones
# are looked up in the index of unigrams and bigrams (at most MAX_GRAM characters).
MIN_INDEXED_CHARACTERS = 3
MAX_GRAM = MIN_INDEXED_CHARACTERS - 1
DEFAULT_LIMIT = 20
LIKE_ESCAPE = "\\"


# --- folding --------------------------------------------------------------------------

def fold(text: str) -> str:
    """`text` as search compares it: NFKC-normalised, case folded, and NFKC-normalised
    again (case folding can leave a form NFKC would change). Segments are indexed in
    this form and queries are folded the same way."""
    normal = unicodedata.normalize("NFKC", text)
    folded = normal.casefold()
    # NFKC is idempotent: only a text case folding changed needs it again (a third of the
    # time of folding a Chinese segment, which every stored segment pays).
    return normal if folded == normal else unicodedata.normalize("NFKC", folded)


def _folded_length(text: str, end: int) -> int:
    return len(fold(text[:end]))


def match_spans(text: str, folded_query: str) -> tuple[tuple[int, int], ...]:
    """Where the (folded) query occurs in `text`: (start, end) character offsets into
    the original text, not overlapping, in order. A match that begins or ends inside
    what one original character folded into (ﬁ is fi) covers that whole character, and
    combining marks after a match stay with it."""
    if not folded_query:
        return ()
    folded = fold(text)
    positions = range(len(text) + 1)
    spans: list[tuple[int, int]] = []
    at = folded.find(folded_query)
    while at >= 0:
        # The last prefix folding to at most `at` characters, the first reaching the end.
        start = bisect.bisect_right(positions, at, key=lambda i: _folded_length(text, i)) - 1
        end = bisect.bisect_left(positions, at + len(folded_query), key=lambda i: _folded_length(text, i))
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
        at = folded.find(folded_query, at + len(folded_query))
    return tuple(spans)


def mark(text: str, spans: Sequence[tuple[int, int]], *, before: str, after: str) -> str:
    """`text` with every span wrapped in `before` … `after`."""
    out: list[str] = []
    last = 0
    for start, end in spans:
        out += [text[last:start], before, text[start:end], after]
        last = end
    out.append(text[last:])
    return "".join(out)


def hms(seconds: float) -> str:
    """`HH:MM:SS` (whole seconds, rounded down)."""
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


# --- queries --------------------------------------------------------------------------

SPEAKER_KEY_MARK = "\x1f"


def speaker_key(speaker: str) -> str:
    """How a speaker filter finds a speaker: folded like the text (`--speaker alice`
    finds Alice), between two U+001F marks (`segments.speaker_key`)."""
    return SPEAKER_KEY_MARK + fold(speaker.strip()).replace(SPEAKER_KEY_MARK, "") + SPEAKER_KEY_MARK


# --- the index of unigrams and bigrams ------------------------------------------------

def grams(folded: str) -> list[str]:
    """The distinct character unigrams and bigrams of a folded text, in order of first
    occurrence: what the short-query index holds for a segment. A text contains a
    string of 1 or 2 characters exactly when that string is one of its grams (the
    PostgreSQL function `spkd_grams` of migration 0010 is the same rule in SQL)."""
    return list(dict.fromkeys([*folded, *map(str.__add__, folded, folded[1:])]))


# SQLite holds the grams in an FTS5 table with the trigram tokenizer (which cuts any text
# into every run of 3 characters, in C): a segment's document is its folded text with a
# private character PAD around every character, so that each of its trigrams is a gram
# in disguise: "PAD x PAD" is the character x, "x PAD y" the pair xy. PAD stands for no
# character of the text (text holding it could only make an extra candidate, and every
# hit's text is checked). The speaker key is one more trigram of three characters of
# plane 16's private use area, a hash of the key (checked as well).
PAD = "\U000F0000"


def gram_token(gram: str) -> str:
    """A gram of 1 or 2 characters as the one trigram of `segments_grams` that stands for it."""
    return PAD + gram + PAD if len(gram) == 1 else gram[0] + PAD + gram[1]


@functools.lru_cache(maxsize=4096)
def speaker_token(key: str) -> str:
    """A speaker key (daemon.store.search.speaker_key) as one trigram of `segments_grams`."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).digest()
    return "".join(chr(0x100000 + int.from_bytes(digest[i:i + 2], "big") % 0xFFFE) for i in (0, 2, 4))


def gram_document(folded: str, key: str) -> str:
    """What `segments_grams` indexes for one segment: its folded text with PAD around
    every character, then its speaker's trigram."""
    return PAD + PAD.join(folded) + PAD + " " + speaker_token(key)


def fts5_string(value: str) -> str:
    """An FTS5 string: inside double quotes every character is literal (`NEAR`, `*`,
    `AND`, `:` are text), and a double quote is written twice."""
    return '"' + value.replace('"', '""') + '"'


@dataclass(frozen=True)
class SearchQuery:
    """A user's query turned into literal search terms. `fts5_phrase` and
    `like_pattern` are bound as parameters, never spliced into SQL."""

    text: str
    folded: str

    @property
    def indexed(self) -> bool:
        """Long enough for the trigram index (else every segment is compared)."""
        return len(self.folded) >= MIN_INDEXED_CHARACTERS

    @property
    def short(self) -> bool:
        """1 or 2 characters: looked up in the index of unigrams and bigrams."""
        return not self.indexed

    @property
    def fts5_phrase(self) -> str:
        return fts5_string(self.folded)

    @property
    def like_pattern(self) -> str:
        """`%folded%` with the LIKE wildcards and the escape character escaped."""
        escaped = (self.folded.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
                   .replace("_", LIKE_ESCAPE + "_"))
        return f"%{escaped}%"


def parse_query(raw: str) -> SearchQuery:
    text = raw.strip()
    folded = fold(text)
    if not folded.strip():
        raise SearchQueryError("nothing to search for: give some text (spkd search 预算)")
    return SearchQuery(text=text, folded=folded)


def parse_date_bound(value: str, *, end: bool) -> dt.datetime:
    """A `--since`/`--until` value as naive UTC (the database's times). `YYYY-MM-DD`
    is a day in local time: as `--since` its start, as `--until` its end (the whole
    day is included). A date with a time (`2026-11-26 14:30`, `…T14:30:00+08:00`) is
    that instant, local time unless it carries an offset."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time())
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SearchQueryError(f"not a date: {value!r} (write 2026-11-26, or 2026-11-26T14:30)") from None
    aware = moment.astimezone() if moment.tzinfo is None else moment
    return aware.astimezone(dt.timezone.utc).replace(tzinfo=None)


# --- searching ------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    job_id: int
    idx: int
    source_name: str
    received_at: dt.datetime
    start_seconds: float
    end_seconds: float
    speaker: str
    text: str
    # Where the query occurs in `text` (character offsets).
    matches: tuple[tuple[int, int], ...]

    def as_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "source_name": self.source_name, "start_seconds": self.start_seconds,
                "end_seconds": self.end_seconds, "speaker": self.speaker, "text": self.text, "idx": self.idx,
                "received_at": self.received_at, "matches": [list(m) for m in self.matches]}


@dataclass(frozen=True)
class SearchResult:
    query: SearchQuery
    hits: tuple[Hit, ...]
    # More hits exist than `limit` allowed.
    more: bool
    # Things the user should know about how this search ran (fallback, missing index).
    notes: tuple[str, ...] = field(default=())


def search(store: "Store", raw_query: str, *, speaker: str | None = None, since: dt.datetime | None = None,
           until: dt.datetime | None = None, job_id: int | None = None, limit: int = DEFAULT_LIMIT) -> SearchResult:
    """Segments containing `raw_query` (literal, case- and width-insensitive), newest
    recordings first, then by time; `since`/`until` (naive UTC, until exclusive) bound
    when spkd received the recording, `speaker` is one speaker's label or name (any
    case and width)."""
    query = parse_query(raw_query)
    if limit < 1:
        raise SearchQueryError(f"-n must be at least 1, not {limit}")
    rows, more = store.search_segments(query, speaker_key=speaker_key(speaker) if speaker else None, since=since,
                                       until=until, job_id=job_id, limit=limit)
    notes: list[str] = []
    if query.short:
        pending = store.search_backfill()
        if pending is not None:
            notes.append(f"the index for 1- and 2-character searches is still being built ({pending.describe()}; "
                         "`spkd db upgrade` or the daemon finishes it): every segment was compared instead")
    elif store.is_postgres and not query.folded.isascii() and not store.trigram_index_covers_cjk():
        notes.append(PG_LOCALE_NOTE)
    hits = tuple(Hit(job_id=r.job_id, idx=r.idx, source_name=r.source_name, received_at=r.received_at,
                     start_seconds=r.start_seconds, end_seconds=r.end_seconds, speaker=r.speaker, text=r.text,
                     matches=match_spans(r.text, query.folded)) for r in rows)
    return SearchResult(query=query, hits=hits, more=more, notes=tuple(notes))


PG_LOCALE_NOTE = ("this PostgreSQL database's LC_CTYPE is C, with which pg_trgm skips Chinese characters: "
                  "searches for them are right but read every segment instead of the index; create the "
                  "database with a UTF-8 locale (createdb --template=template0 --locale=C.UTF-8 …) to index them")
