"""The dashboard's actions on jobs and voices, and its error pages.

Routes (daemon.web.app includes them):

    POST /jobs/<id>/cancel              cancel a queued or running job (daemon.jobs.cancel, as `spkd cancel`)
    GET  /jobs/<id>/remove              what removing a finished job deletes and keeps: the confirmation page
    POST /jobs/<id>/remove              remove it (daemon.jobs.remove, as `spkd remove`; field `state` as shown)
    GET  /voices/samples/<id>/audio     a voice sample's recording, where spkd keeps it (paths.voices)
    POST /voices/rename                 rename a voice and re-render every job it named
                                        (daemon.jobs.voice_rename, as `spkd voices rename`)

Every error a page can meet (no such job, a refused form, a wrong CSRF token, no such
page, the database out of reach) is answered by `error_page`: an HTML page in the
site's layout that says what happened and links back to where it makes sense to go.
A client that asks for JSON (or `/upload`, whose answers are JSON) gets
`{"error": …}`, `/metrics` and a client that asks for plain text get text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon.config import Config
from daemon.errors import DatabaseUnavailableError, JobRefusedError, NoSuchJobError, UnusableDatabaseError, VoiceError
from daemon.jobs import remove, voice_rename
from daemon.jobs.cancel import CANCELLABLE_STATES, cancel_job
from daemon.store import SampleRow, Store
from daemon.voices import library
from daemon.web.pages import AUDIO_TYPES

__all__ = ["BY_DASHBOARD", "PlayableSample", "cancellable", "error_page", "removable", "routes", "samples_by_voice",
           "template_globals"]

# Who cancelled, in the job's message and its `cancelled` event.
BY_DASHBOARD = "the dashboard"
# Paths whose answers are not pages: their errors keep their format.
JSON_PATHS = ("/upload",)
TEXT_PATHS = ("/metrics",)

Render = Callable[..., HTMLResponse]
PostedForm = Callable[[Request], Awaitable[dict[str, list[str]]]]


@dataclass(frozen=True)
class PlayableSample:
    """One sample of a voice as the voices page lists it: playable when its recording is
    kept under paths.voices (daemon.voices.library.sample_recording)."""

    sample: SampleRow
    playable: bool
    suffix: str  # its recording's extension, for the player's type


def samples_by_voice(config: Config, store: Store) -> dict[int, list[PlayableSample]]:
    """Every voice's samples, oldest first, for the voices page."""
    found: dict[int, list[PlayableSample]] = {}
    for sample in store.voice_samples_of():
        path = library.sample_recording(config, sample)
        found.setdefault(sample.voice_id, []).append(PlayableSample(
            sample=sample, playable=path is not None, suffix=path.suffix.lower().lstrip(".") if path else ""))
    return found


# --------------------------------------------------------------------------- error pages

def _way_back(request: Request, status: int) -> tuple[str, str]:
    """Where the error page's link leads, and its words: the page the request came from
    when it makes sense (a form's job, the voices page), else the overview."""
    path = request.url.path
    job = re.match(r"^/jobs/([0-9]{1,18})(/|$)", path)
    if job and (status == 404 or path.rstrip("/") == f"/jobs/{job.group(1)}"):
        return "/jobs", "the jobs list"
    if job:
        return f"/jobs/{job.group(1)}", f"job {job.group(1)}"
    for prefix, words in (("/voices", "the voices page"), ("/search", "search"), ("/jobs", "the jobs list")):
        # A form of that page, or a page under it; the page itself failing to show leads home.
        inside = path.startswith(prefix + "/") or (path == prefix and request.method != "GET")
        if inside:
            return prefix, words
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc == request.headers.get("host") and referer.path.startswith("/") \
            and not referer.path.startswith("//") and referer.path != path:
        return referer.path + (f"?{referer.query}" if referer.query else ""), "the page before"
    return "/", "the overview"


def error_page(render: Render) -> Callable[[Request, Exception], Response]:
    """The exception handler of every error (HTTPException, 404, 405, the database's
    troubles, anything unforeseen as a 500): see the module docstring."""

    def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, detail = exc.status_code, str(exc.detail)
        elif isinstance(exc, (DatabaseUnavailableError, UnusableDatabaseError)):
            # One clear page, not a 500: what the database said, and that a reload tries again.
            status, detail = 503, f"the job database cannot be used right now ({exc}); reload to try again"
        else:
            logger.opt(exception=exc).error("dashboard: {} {} failed: {}", request.method, request.url.path, exc)
            status, detail = 500, "internal error (the dashboard's log says more)"
        accept = request.headers.get("accept", "")
        path = request.url.path
        if path in JSON_PATHS or ("application/json" in accept and "text/html" not in accept):
            return JSONResponse({"error": detail}, status_code=status)
        if path in TEXT_PATHS or (accept.startswith("text/plain") and "text/html" not in accept):
            return Response(f"{detail}\n", status_code=status, media_type="text/plain")
        back, back_words = _way_back(request, status)
        return render(request, "error.html", status=status, status_code=status, detail=detail, back=back,
                      back_words=back_words, page="")

    return handle


# --------------------------------------------------------------------------- routes

def _first(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0]


def _local(value: str, default: str) -> str:
    """A local path to go back to; anything else (another site, `//host`) is `default`."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def routes(config: Config, store: Store, render: Render, posted_form: PostedForm) -> list[Route]:
    """The action routes over `config` and `store`; `render` and `posted_form` are the
    app's (daemon.web.app: the layout's context, the CSRF check)."""

    async def job_cancel(request: Request) -> Response:
        """What `spkd cancel JOB` does (daemon.jobs.cancel.cancel_job): 409 with the reason
        for a job that has finished."""
        fields = await posted_form(request)
        job_id = request.path_params["job_id"]
        try:
            await run_in_threadpool(lambda: cancel_job(config, store, job_id, by=BY_DASHBOARD))
        except NoSuchJobError as exc:
            raise HTTPException(404, exc.message) from None
        except JobRefusedError as exc:
            raise HTTPException(409, exc.message) from None
        return RedirectResponse(_local(_first(fields, "next"), f"/jobs/{job_id}"), status_code=303)

    def _removal(job_id: int) -> remove.Removal:
        removals, refused = remove.plan(config, store, [job_id])
        if refused or not removals:
            job = store.job(job_id)
            raise HTTPException(404 if job is None else 409, "; ".join(refused) or f"no job {job_id}")
        return removals[0]

    def job_remove_page(request: Request) -> HTMLResponse:
        """The confirmation: what goes (outputs, stored transcript, rows) and what stays
        (the audio, in failed/), as `spkd remove` prints it before it asks."""
        item = _removal(request.path_params["job_id"])
        return render(request, "remove.html", item=item, job=item.job, failed_folder=str(config.paths.failed),
                      page="jobs")

    async def job_remove(request: Request) -> Response:
        """Remove after confirmation: the job must still be in the state the page showed
        (field `state`), else nothing goes and the page says why."""
        fields = await posted_form(request)
        job_id = request.path_params["job_id"]
        item = await run_in_threadpool(_removal, job_id)
        shown = _first(fields, "state")
        if shown != item.job.state:
            raise HTTPException(409, f"job {job_id} is {item.job.state} now, not {shown or 'as shown'}: "
                                     "nothing removed; look at what would go again")
        removed = await run_in_threadpool(lambda: remove.remove(config, store, [item]))
        if job_id not in removed:
            raise HTTPException(409, f"job {job_id} changed meanwhile (retried?); nothing removed")
        return RedirectResponse("/jobs?" + urlencode({"removed": job_id}), status_code=303)

    def sample_audio(request: Request) -> FileResponse:
        sample_id = request.path_params["sample_id"]
        sample = next((s for s in store.voice_samples_of() if s.id == sample_id), None)
        path = library.sample_recording(config, sample) if sample is not None else None
        if path is None:
            raise HTTPException(404, f"no recording of sample {sample_id} is kept under paths.voices")
        return FileResponse(path, media_type=AUDIO_TYPES.get(path.suffix.lower().lstrip("."),
                                                             "application/octet-stream"))

    async def voices_rename(request: Request) -> Response:
        """`spkd voices rename NAME NEW_NAME`: fields `name`, `new_name`."""
        fields = await posted_form(request)
        name, new_name = _first(fields, "name"), _first(fields, "new_name")
        if not name.strip() or not new_name.strip():
            raise HTTPException(400, "give the voice and its new name")
        try:
            done = await run_in_threadpool(lambda: voice_rename.rename_voice(config, store, name, new_name))
        except VoiceError as exc:
            raise HTTPException(400, exc.message) from None
        query = {"renamed": done.voice, "jobs": len(done.jobs), "skipped": len(done.skipped)}
        return RedirectResponse("/voices?" + urlencode(query) + f"#voice-{done.voice}", status_code=303)

    return [
        Route("/jobs/{job_id:job}/cancel", job_cancel, methods=["POST"]),
        Route("/jobs/{job_id:job}/remove", job_remove_page),
        Route("/jobs/{job_id:job}/remove", job_remove, methods=["POST"]),
        Route("/voices/samples/{sample_id:job}/audio", sample_audio),
        Route("/voices/rename", voices_rename, methods=["POST"]),
    ]


def cancellable(state: str) -> bool:
    """Whether the pages offer Cancel for a job in `state` (daemon.jobs.cancel's states)."""
    return state in CANCELLABLE_STATES


def removable(state: str) -> bool:
    """Whether the pages offer Remove for a job in `state` (daemon.jobs.remove's states)."""
    return state in remove.REMOVABLE_STATES


def template_globals() -> dict[str, Any]:
    """What the templates ask: which buttons a job's state offers."""
    return {"can_cancel": cancellable, "can_remove": removable}

