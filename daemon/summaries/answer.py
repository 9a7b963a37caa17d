"""What comes back: the model's answer read into the summary object (pure).

    {"schema": "spkd.summary/1", "format": "json",
     "overview":       [{"text": "…", "segments": [3, 4], "moments": [{"segment": 3, "start": 12.48,
                                                                       "speaker": "王总"}, …]}],
     "decisions":      [{"text": "…", "segments": […], "moments": […]}],
     "action_items":   [{"who": "王总" | null, "what": "…", "due": "周五" | null, "segments": […],
                         "moments": […]}],
     "open_questions": [{"text": "…", "segments": […], "moments": […]}],
     "text": null}

Segment numbers count from 1 (the prompt's line numbers); `moments` are the cited
segments' start times (seconds, to the millisecond) and speakers, so that each point
links to when it was said. Numbers the transcript does not have are dropped. An
answer that is no such JSON object (prose, a JSON of another shape, a cut-off answer)
is kept whole as `"format": "text"` with `text` the answer as written and the lists
empty: never lost, never an error. Models wrap JSON in code fences, name keys a little
differently (`actionItems`, `owner`, `refs`) and write `"segments": "3, 5-7"`; all of
that is read.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from daemon.transcript import Transcript

__all__ = ["SCHEMA", "SECTIONS", "parse_answer", "text_summary"]

SCHEMA = "spkd.summary/1"
# The lists of a summary, in the order every output shows them.
SECTIONS = ("overview", "decisions", "action_items", "open_questions")

# Other names models give the sections and fields (compared lower-case, without "_", "-" or spaces).
_SECTION_NAMES = {
    "overview": ("overview", "summary", "keypoints", "points", "topics"),
    "decisions": ("decisions", "decision", "decisionsmade", "agreements"),
    "action_items": ("actionitems", "actions", "todos", "tasks", "nextsteps", "followups"),
    "open_questions": ("openquestions", "questions", "openissues", "unresolved", "openitems"),
}
_TEXT_FIELDS = ("text", "point", "summary", "description", "content", "decision", "question", "item", "title")
_SEGMENT_FIELDS = ("segments", "segment", "refs", "references", "sources", "citations", "lines", "line", "ids")
_WHO_FIELDS = ("who", "owner", "assignee", "person", "responsible", "by")
_WHAT_FIELDS = ("what", "task", "action", "text", "item", "description")
_DUE_FIELDS = ("due", "when", "deadline", "duedate", "bywhen")
_NUMBERS = re.compile(r"(\d+)\s*(?:[-–~]\s*(\d+))?")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
# A range longer than this is not a citation (a model that wrote "1-100000").
_MAX_RANGE = 200


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _field(item: Mapping[str, Any], names: Iterable[str]) -> Any:
    wanted = {_key(n) for n in names}
    for key, value in item.items():
        if isinstance(key, str) and _key(key) in wanted and value not in (None, "", []):
            return value
    return None


def _json_object(answer: str) -> dict[str, Any] | None:
    """The JSON object in `answer`: all of it, inside a code fence, or from its first `{`
    to its last `}`."""
    candidates = [answer.strip(), *(m.group(1).strip() for m in _FENCE.finditer(answer))]
    start, end = answer.find("{"), answer.rfind("}")
    if 0 <= start < end:
        candidates.append(answer[start:end + 1])
    if start >= 0:
        candidates.append(_closed(answer[start:]))  # an answer cut off by max_tokens: its whole points
    for candidate in candidates:
        try:
            # strict=False: a line break or tab left raw inside a string (llama.cpp's JSON
            # grammar allows them, small models write them) does not make the answer prose
            doc = json.loads(candidate, strict=False)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            return doc
    return None


def _closed(text: str) -> str:
    """`text`, a JSON object cut off part-way (the answer reached `max_tokens`), up to its
    last whole object or list inside it, with the brackets still open closed: what the
    model said in full is kept, the point it was in the middle of is dropped."""
    stack: list[str] = []
    in_string = escaped = False
    cut, cut_stack = 0, ""
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return ""  # not JSON this reading can mend
            if not stack:
                return text[:i + 1]  # whole after all
            cut, cut_stack = i + 1, "".join(reversed(stack))
    return text[:cut] + cut_stack if cut else ""


def _numbers(value: Any, count: int) -> list[int]:
    """Segment numbers from a list of numbers, numeric strings, "[12]", "3, 5-7"; only 1..count."""
    found: list[int] = []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, (int, float)) and float(item).is_integer():
            found.append(int(item))
        elif isinstance(item, str):
            for first, last in _NUMBERS.findall(item):
                low, high = int(first), int(last or first)
                if low <= high and high - low <= _MAX_RANGE:
                    found.extend(range(low, high + 1))
        elif isinstance(item, Mapping):
            found.extend(_numbers(_field(item, ("segment", "number", "id", "line")), count))
    return sorted({n for n in found if 1 <= n <= count})


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = " ".join(str(value).split())
    return text or None


def _moments(numbers: list[int], transcript: Transcript) -> list[dict[str, Any]]:
    return [{"segment": n, "start": round(transcript.segments[n - 1].start, 3),
             "speaker": transcript.speaker_display(transcript.segments[n - 1].speaker)} for n in numbers]


def _point(item: Any, section: str, transcript: Transcript) -> dict[str, Any] | None:
    count = len(transcript.segments)
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, Mapping):
        return None
    cited = _field(item, _SEGMENT_FIELDS)
    if section == "action_items":
        what = _text(_field(item, _WHAT_FIELDS))
        if what is None:
            return None
        point: dict[str, Any] = {"who": _text(_field(item, _WHO_FIELDS)), "what": what,
                                 "due": _text(_field(item, _DUE_FIELDS))}
        words = what
    else:
        text = _text(_field(item, _TEXT_FIELDS))
        if text is None:
            return None
        point = {"text": text}
        words = text
    # No list of numbers: the numbers it wrote into its text in brackets ("… [12]").
    numbers = _numbers(cited, count) if cited is not None else _numbers(re.findall(r"\[(\d+)\]", words), count)
    point.update(segments=numbers, moments=_moments(numbers, transcript))
    return point


def text_summary(answer: str) -> dict[str, Any]:
    """The summary of an answer that ignored the format: its text, kept whole."""
    return {"schema": SCHEMA, "format": "text", **{section: [] for section in SECTIONS}, "text": answer.strip()}


def parse_answer(answer: str, transcript: Transcript) -> dict[str, Any]:
    """The summary object of the model's `answer` about `transcript` (see the module's
    docstring): its points when it is the JSON asked for, else its text."""
    doc = _json_object(answer)
    if doc is None:
        return text_summary(answer)
    summary: dict[str, Any] = {"schema": SCHEMA, "format": "json"}
    seen = False
    for section in SECTIONS:
        present, points = _sections_of(doc, section, transcript)
        seen = seen or present
        summary[section] = points
    if not seen:  # JSON, but of another shape: the model's words are what there is
        return text_summary(answer)
    summary["text"] = None
    return summary


def _sections_of(doc: Mapping[str, Any], section: str, transcript: Transcript) -> tuple[bool, list[dict[str, Any]]]:
    names = _SECTION_NAMES[section]
    present = any(isinstance(k, str) and _key(k) in names for k in doc)
    value = _field(doc, names)
    if value is None:
        return present, []
    items = value if isinstance(value, list) else [value]
    return True, [p for p in (_point(item, section, transcript) for item in items) if p is not None]
