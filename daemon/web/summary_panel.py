"""The job page's summary panel: the meeting's summary (issue #30) as the summaries
backend keeps it (daemon.jobs.summarize, the `summaries` table), every point with the
moments it rests on, each a link that plays the recording from there.

Routes (daemon.web.app includes them):

    GET  /jobs/<id>/summary     the panel's body alone, for the page's live refresh while
                                the summary is queued or being written
    POST /jobs/<id>/summary     (re)request the summary: what `spkd summarize JOB` does
                                (daemon.jobs.summarize.request, the same rule)

The template (templates/_summary.html, included by job.html) asks `summary_panel(job)`
for a `SummaryPanel`, or None where there is nothing to show: summaries are off, or the
job has no transcript. The last good summary stays on the page while a renewal is
queued, running or failed (the backend keeps it), with the state said above it.
Everything shown comes from the model and is set as text by the template's
autoescaping, never as markup.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon.config import Config
from daemon.errors import JobRefusedError, NoSuchJobError
from daemon.jobs import summarize
from daemon.store import Job, Store

__all__ = ["Moment", "Point", "Section", "SummaryPanel", "panel", "routes", "template_globals"]

Render = Callable[..., HTMLResponse]
PostedForm = Callable[[Request], Awaitable[dict[str, list[str]]]]

# The summary object's lists, in the order the panel shows them (and NAME.summary.md).
SECTIONS = (("overview", "Overview"), ("decisions", "Decisions"), ("action_items", "Action items"),
            ("open_questions", "Open questions"))
# While the summary is in these states the panel refreshes itself (spkd.js's live parts).
LIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class Moment:
    """One cited segment: where a click plays from."""

    segment: int  # 1-based, as in the prompt and NAME.sentences.txt
    start_seconds: float
    speaker: str | None


@dataclass(frozen=True)
class Point:
    text: str
    moments: tuple[Moment, ...]
    who: str | None = None  # action items: who does it (as the model said)
    due: str | None = None  # action items: by when, where said

    @property
    def start_seconds(self) -> float | None:
        """Where clicking the point itself plays from: its first moment."""
        return self.moments[0].start_seconds if self.moments else None


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class SummaryPanel:
    job_id: int
    # "none" (never requested), "queued", "running", "done", "failed"
    state: str
    stale: bool  # the transcript was edited after the summary shown was made
    made_from_version: int | None
    current_version: int | None
    attempts: int
    max_attempts: int
    error: str | None
    next_attempt_at: dt.datetime | None
    model: str | None
    finished_at: dt.datetime | None
    sections: tuple[Section, ...] = ()
    text: str | None = None  # the model's answer kept as written: it ignored the JSON format
    has_result: bool = False
    enabled: bool = True  # summaries are on (summary.endpoint): a request can be made

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def can_request(self) -> bool:
        """Whether a (re)request can do anything now: summaries are on, and none is queued
        or running."""
        return self.enabled and self.state not in LIVE_STATES


def _moments(raw: Any) -> tuple[Moment, ...]:
    found: list[Moment] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, Mapping):
            continue
        try:
            found.append(Moment(segment=int(item["segment"]), start_seconds=float(item["start"]),
                                speaker=str(item["speaker"]) if item.get("speaker") is not None else None))
        except (KeyError, TypeError, ValueError):
            continue  # a moment without a time cannot be played: leave it out, keep the point
    return tuple(found)


def _points(raw: Any) -> tuple[Point, ...]:
    points: list[Point] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, Mapping):
            continue
        text = item.get("what") if item.get("what") is not None else item.get("text")
        if text is None or not str(text).strip():
            continue
        points.append(Point(text=str(text), moments=_moments(item.get("moments")),
                            who=str(item["who"]) if item.get("who") else None,
                            due=str(item["due"]) if item.get("due") else None))
    return tuple(points)


def _result(value: Any) -> Mapping[str, Any] | None:
    """The stored summary object (a dict, or its JSON text on a backend that keeps text)."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def panel(config: Config, store: Store, job: Job) -> SummaryPanel | None:
    """What the job page shows of `job`'s summary; None where it shows nothing: a job that
    is not a finished transcription, or summaries off and none was ever made."""
    if job.state != "done" or job.task != "transcribe":
        return None
    status = summarize.status(store, job.id)
    if status is None:
        if not config.summary.enabled:
            return None
        return SummaryPanel(job_id=job.id, state="none", stale=False, made_from_version=None, current_version=None,
                            attempts=0, max_attempts=config.summary.max_attempts, error=None, next_attempt_at=None,
                            model=None, finished_at=None)
    row = status.row
    result = _result(row.result)
    sections: tuple[Section, ...] = ()
    text: str | None = None
    if result is not None:
        if result.get("format") == "text":
            text = str(result.get("text") or "")
        else:
            sections = tuple(Section(key, title, pts) for key, title in SECTIONS
                             if (pts := _points(result.get(key))))
    return SummaryPanel(job_id=job.id, state=row.state, stale=status.stale,
                        made_from_version=row.transcript_version, current_version=status.current_version,
                        attempts=row.attempts, max_attempts=row.max_attempts,
                        error=row.error_message if row.state != "done" else None,
                        next_attempt_at=row.next_attempt_at, model=row.model, finished_at=row.finished_at,
                        sections=sections, text=text, has_result=result is not None,
                        enabled=config.summary.enabled)


def template_globals(config: Config, store: Store) -> dict[str, Any]:
    """`summary_panel(job)` for templates/_summary.html."""
    return {"summary_panel": lambda job: panel(config, store, job)}


def routes(config: Config, store: Store, render: Render, posted_form: PostedForm) -> list[Route]:
    """The panel's routes; `render` and `posted_form` are the app's (daemon.web.app)."""

    def summary_fragment(request: Request) -> HTMLResponse:
        job = store.job(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']}")
        return render(request, "_summary.html", job=job, fragment=True)

    async def summary_request(request: Request) -> Response:
        """What `spkd summarize JOB` does: 409 with the reason where it is refused (the job
        is not a finished transcription, or summaries are off)."""
        await posted_form(request)
        job_id = request.path_params["job_id"]
        try:
            await run_in_threadpool(summarize.request, config, store, job_id)
        except NoSuchJobError as exc:
            raise HTTPException(404, exc.message) from None
        except JobRefusedError as exc:
            raise HTTPException(409, exc.message) from None
        return RedirectResponse(f"/jobs/{job_id}#summary", status_code=303)

    return [Route("/jobs/{job_id:job}/summary", summary_fragment),
            Route("/jobs/{job_id:job}/summary", summary_request, methods=["POST"])]
