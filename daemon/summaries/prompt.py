"""What is asked of the model: the instructions, the transcript as numbered lines, and
the transcript cut into parts that fit the model's context (pure; no I/O but reading
the configured prompt file).

Each transcript segment is one line the model can cite by its number:

    [12] 00:12:05 王总: 下周一之前把预算草案发给我。

numbered from 1 as in the `.sentences.txt` file. When the lines do not fit one request
(`summary.context_tokens` less the answer's `summary.max_answer_tokens` and the
instructions), they are cut into consecutive parts, each summarised alone (map), and
the parts' summaries are combined by further requests (reduce), in groups that fit,
until one is left. Tokens are estimated, never counted (the server's tokenizer is
unknown here), and on the high side: a character of CJK (or any non-Latin script) as
two tokens, three other characters as one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from daemon.errors import SummaryRefusedError
from daemon.summary_config import SummaryConfig
from daemon.transcript import Transcript

__all__ = ["ANSWER_SCHEMA", "BUILTIN_INSTRUCTIONS", "FORMAT", "Part", "combine_messages", "estimate_tokens", "fit",
           "instructions", "line_budget", "part_messages", "segment_lines", "split_parts", "summary_text"]

# The answer's shape; every point names the segment numbers it rests on (daemon.summaries.answer reads it).
FORMAT = """Answer with one JSON object and nothing else, in this shape:
{"overview": [{"text": "...", "segments": [1, 2]}],
 "decisions": [{"text": "...", "segments": [7]}],
 "action_items": [{"who": "...", "what": "...", "due": "... or null", "segments": [12]}],
 "open_questions": [{"text": "...", "segments": [20]}]}
"segments" lists the numbers of the transcript lines a point rests on (the number in brackets at the start of
each line). Use only numbers that appear in the transcript. Leave a list empty when the meeting had none."""

# The same shape as a JSON schema, sent with json_mode (response_format's "schema": llama.cpp's servers turn it
# into a grammar, others ignore it). Without it a small model held to "some JSON object" answers JSON of
# another shape; with it, it answers this one. The bounds also bound the answer's length, i.e. its time.
_CITED = {"type": "array", "items": {"type": "integer"}, "maxItems": 8}
_POINT = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 400}, "segments": _CITED},
          "required": ["text", "segments"]}
_ACTION = {"type": "object", "properties": {"who": {"type": ["string", "null"], "maxLength": 80},
                                            "what": {"type": "string", "maxLength": 400},
                                            "due": {"type": ["string", "null"], "maxLength": 80}, "segments": _CITED},
           "required": ["who", "what", "due", "segments"]}
ANSWER_SCHEMA = {"type": "object", "properties": {
    "overview": {"type": "array", "items": _POINT, "maxItems": 12},
    "decisions": {"type": "array", "items": _POINT, "maxItems": 12},
    "action_items": {"type": "array", "items": _ACTION, "maxItems": 12},
    "open_questions": {"type": "array", "items": _POINT, "maxItems": 12}},
    "required": ["overview", "decisions", "action_items", "open_questions"]}

BUILTIN_INSTRUCTIONS = """You summarise the transcript of a meeting for the people who took part in it.
Each line of the transcript is one sentence: its number in brackets, when it was said (hours:minutes:seconds
from the start), who said it, and what was said. Speaker names may be labels such as Speaker1.
Write a short overview of what was discussed, the decisions that were made, the action items (who is to do
what, and by when if it was said), and the questions left open. Report only what the transcript says."""

COMBINE = """The transcript was too long for one request, so each of its consecutive parts was summarised on its
own. Below are those summaries, in order. Combine them into one summary of the whole meeting: merge points that
say the same thing, keep every decision and action item, and keep the segment numbers each point rests on."""

# Characters below this code point (Latin, Greek, Cyrillic and their punctuation) count three to a token.
_WIDE_FROM = 0x0590
# Per message: the chat template's role markers and separators.
_MESSAGE_TOKENS = 16
# Estimates are estimates: a tenth of the room is kept free.
_SAFETY = 0.9


def estimate_tokens(text: str) -> int:
    """An estimate on the high side of what `text` costs in any current tokenizer."""
    wide = sum(1 for char in text if ord(char) >= _WIDE_FROM)
    return 2 * wide + math.ceil((len(text) - wide) / 3)


def instructions(settings: SummaryConfig) -> str:
    """The system message: `summary.prompt`'s text when set (it replaces the built-in
    instructions), the answer's format, and the language to write in."""
    if settings.prompt is not None:
        try:
            text = settings.prompt.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SummaryRefusedError(f"summary.prompt: cannot read {settings.prompt}: {exc}") from None
        if not text:
            raise SummaryRefusedError(f"summary.prompt: {settings.prompt} is empty")
    else:
        text = BUILTIN_INSTRUCTIONS
    language = (f"Write the summary in {settings.language}." if settings.language
                else "Write the summary in the language the transcript is in.")
    return f"{text}\n\n{FORMAT}\n\n{language}"


def _hms(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def segment_lines(transcript: Transcript) -> list[str]:
    """`[N] HH:MM:SS Speaker: text`, one per segment, numbered from 1."""
    return [f"[{number}] {_hms(s.start)} {transcript.speaker_display(s.speaker)}: {' '.join(s.text.split())}"
            for number, s in enumerate(transcript.segments, 1)]


def line_budget(settings: SummaryConfig, system: str) -> int:
    """The tokens one request has for its transcript lines (or part summaries)."""
    room = settings.context_tokens - settings.max_answer_tokens - estimate_tokens(system) - 2 * _MESSAGE_TOKENS
    return max(1, int(room * _SAFETY))


def fit(text: str, budget: int) -> str:
    """`text` cut (with `…`) so that it costs at most `budget` tokens."""
    if estimate_tokens(text) <= budget:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits with its ellipsis
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle] + "…") <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


@dataclass(frozen=True)
class Part:
    """Consecutive transcript lines sent in one request: segments `first`..`last` (from 1)."""

    first: int
    last: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def split_parts(lines: Sequence[str], budget: int) -> list[Part]:
    """The lines in consecutive parts of at most `budget` tokens each (a line longer
    than that alone is cut to fit); one part when they all fit."""
    parts: list[Part] = []
    current: list[str] = []
    used = 0
    first = 1
    for number, line in enumerate(lines, 1):
        cost = estimate_tokens(line) + 1  # its newline
        if cost > budget:
            line = fit(line, budget - 1)
            cost = estimate_tokens(line) + 1
        if current and used + cost > budget:
            parts.append(Part(first, number - 1, tuple(current)))
            current, used, first = [], 0, number
        current.append(line)
        used += cost
    if current or not parts:
        parts.append(Part(first, first + len(current) - 1, tuple(current)))
    return parts


def part_messages(system: str, part: Part, *, parts: int, index: int) -> list[dict[str, str]]:
    """The request for one part (map): the instructions and the part's lines."""
    where = "" if parts == 1 else (f"This is part {index + 1} of {parts} of the transcript "
                                   f"(lines {part.first} to {part.last}).\n\n")
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{where}Transcript:\n{part.text}"}]


def summary_text(summary: Mapping[str, Any]) -> str:
    """A part's summary as the combining request shows it: its points as compact JSON,
    or its plain text when the model ignored the format."""
    if summary.get("format") != "json":
        return str(summary.get("text") or "")
    keep = {key: [{k: v for k, v in point.items() if k != "moments"} for point in summary.get(key) or ()]
            for key in ("overview", "decisions", "action_items", "open_questions")}
    return json.dumps(keep, ensure_ascii=False, separators=(",", ":"))


def combine_messages(system: str, pieces: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The request that combines part summaries (reduce): (label, summary text) each."""
    body = "\n\n".join(f"{label}:\n{text}" for label, text in pieces)
    return [{"role": "system", "content": f"{system}\n\n{COMBINE}"},
            {"role": "user", "content": body}]
