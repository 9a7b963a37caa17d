"""`NAME.summary.md`: a job's summary for people, every point linked to the moments it
rests on in the transcript's page (`NAME.html#t=<seconds>`, the page's own links).

    # Summary: meeting.m4a

    ## Overview

    - The budget for next quarter was discussed. [00:12:05](meeting.html#t=725.480) [00:13:10](meeting.html#t=790.000)

    ## Decisions
    …
    ## Action items

    - **王总**: send the draft (due: Monday) [00:20:01](meeting.html#t=1201.040)

    ## Open questions
    …

Sections without points are left out. A summary whose answer ignored the format
(`"format": "text"`) is its text under `## Summary`, as the model wrote it (it is
Markdown more often than not). Everything else that comes from the model goes through
the md writer's `escape`, so it never becomes markup. Pure: the summary object
(daemon.summaries.answer's shape, as a mapping) in, the file's text out.
"""

from __future__ import annotations

from typing import Any, Mapping

from .common import decimal, hms, ms
from .markdown_doc import escape

__all__ = ["SECTION_TITLES", "render_summary_markdown"]

SECTION_TITLES = {"overview": "Overview", "decisions": "Decisions", "action_items": "Action items",
                  "open_questions": "Open questions"}


def _destination(page: str) -> str:
    """The page's name as a link destination: the characters that would end or break one
    (space, parentheses, angle brackets, backslash, %) percent-encoded."""
    return "".join(f"%{ord(c):02X}" if c in " ()<>\\%" or ord(c) < 0x20 else c for c in page)


def _links(point: Mapping[str, Any], page: str) -> str:
    page = _destination(page)
    links = []
    for moment in point.get("moments") or ():
        milliseconds = ms(float(moment["start"]))
        links.append(f"[{hms(milliseconds)}]({page}#t={decimal(milliseconds)})")
    return (" " + " ".join(links)) if links else ""


def _line(section: str, point: Mapping[str, Any], page: str) -> str:
    if section == "action_items":
        who = f"**{escape(str(point['who']))}**: " if point.get("who") else ""
        due = f" (due: {escape(str(point['due']))})" if point.get("due") else ""
        return f"- {who}{escape(str(point.get('what') or ''))}{due}{_links(point, page)}"
    return f"- {escape(str(point.get('text') or ''))}{_links(point, page)}"


def render_summary_markdown(summary: Mapping[str, Any], *, title: str, page: str) -> str:
    """The summary as Markdown; `title`: the recording's name, `page`: the html file's
    name the links point into (`meeting.html`)."""
    blocks = [f"# Summary: {escape(title)}"]
    if summary.get("format") != "json":
        blocks += ["## Summary", str(summary.get("text") or "").strip()]
    else:
        for section, heading in SECTION_TITLES.items():
            points = summary.get(section) or []
            if points:
                blocks += [f"## {heading}", "\n".join(_line(section, p, page) for p in points)]
    return "\n\n".join(blocks) + "\n"
