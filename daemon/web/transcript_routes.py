"""The job page's transcript: the view it shares with the standalone `NAME.html`
(daemon.writers.html_page), corrections in place with their history, and downloads of
any format, made on demand from the job's current stored transcript.

Routes (daemon.web.app includes them):

    GET  /transcript-view.css              the transcript view's one stylesheet (html_page.VIEW_CSS)
    POST /jobs/<id>/segments/<number>      `text`: correct one sentence (daemon.jobs.corrections.edit_segment,
                                           as `spkd edit JOB --segment N --text T`; N numbered as the srt numbers
                                           its cues); JSON for a script that asks for it, else back to the page
    POST /jobs/<id>/revert                 `version`: that version back, as a new one (corrections.revert)
    GET  /jobs/<id>/versions               the history panel (an HTML fragment: the page refreshes it after an edit)
    GET  /jobs/<id>/download/<format>      any format, configured or not, rendered now (never written to the outbox:
                                           publishing it is daemon.jobs.results's alone)
    GET  /jobs/<id>/outputs.zip            the job's outputs in one zip (`?formats=all`: every format)

Every name and sentence reaches the page escaped (the view escapes what it renders,
Jinja the rest; the page's script sets text, never markup), so an edited text that
looks like HTML stays text.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Awaitable, Callable

from jinja2 import Environment
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon import writers
from daemon.config import Config
from daemon.errors import BadTextError, JobRefusedError, NoSuchJobError, NoSuchSegmentError, NoSuchVersionError
from daemon.jobs import corrections, outputs
from daemon.store import Job, Store, TranscriptVersion
from daemon.transcript import Transcript
from daemon.web import pages
from daemon.writers import html_page

__all__ = ["TranscriptView", "routes"]

Render = Callable[..., HTMLResponse]
PostedForm = Callable[[Request], Awaitable[dict[str, list[str]]]]
# Fixed zip entry times where a job has no finishing time: the same job, the same zip.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class TranscriptView:
    """The shared view's parts for one transcript, as markup the job page places
    (html_page escaped every text in them)."""

    def __init__(self, transcript: Transcript) -> None:
        numbers = {n.index: n.number for n in corrections.numbering(transcript)}
        self.timeline = Markup(html_page.render_timeline(transcript))
        self.legend = Markup(html_page.render_legend(transcript))
        self.turns = Markup(html_page.render_turns(transcript, numbers))


def _editable(row: Job) -> bool:
    """What daemon.jobs.corrections accepts: a done transcription."""
    return row.state == "done" and row.task == "transcribe"


def _versions(store: Store, row: Job) -> list[TranscriptVersion]:
    """The history panel's rows, newest first; none for a job that cannot have versions."""
    if not _editable(row):
        return []
    try:
        return list(reversed(corrections.history(store, row.id)))
    except JobRefusedError:
        return []


def _file_name(row: Job, fmt: str) -> str:
    return Path(row.output_stem).name + writers.extension(fmt)


def _refusal(exc: JobRefusedError) -> HTTPException:
    """A refused correction as the status a browser or script understands."""
    if isinstance(exc, (NoSuchJobError, NoSuchSegmentError, NoSuchVersionError)):
        return HTTPException(404, exc.message)
    if isinstance(exc, BadTextError):
        return HTTPException(400, exc.message)  # the text itself
    return HTTPException(409, exc.message)  # the job's state, or another change that landed first


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def routes(config: Config, store: Store, render: Render, posted_form: PostedForm, env: Environment) -> list[Route]:
    """The transcript's routes over `config`'s jobs; `env` gets the job page's helpers
    (`transcript_view`, `versions`, `all_formats`)."""
    env.globals.update(transcript_view=TranscriptView, versions=lambda row: _versions(store, row),
                       can_correct=_editable, all_formats=writers.FORMATS)

    def job_row(job_id: int) -> Job:
        row = store.job(job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        return row

    def current_transcript(row: Job) -> Transcript:
        transcript = outputs.load_transcript(config, row.id) if row.state == "done" else None
        if transcript is None:
            raise HTTPException(404, f"job {row.id} has no stored transcript to make a format from"
                                + ("" if row.state == "done" else f" (it is {row.state})"))
        return transcript

    def view_css(request: Request) -> Response:
        return Response(html_page.VIEW_CSS, media_type="text/css; charset=utf-8")

    def download(request: Request) -> Response:
        """One format from the transcript as it is now (byte for byte what publishing it
        would write), as an attachment named like the job's outputs."""
        row = job_row(request.path_params["job_id"])
        fmt = request.path_params["fmt"]
        if fmt not in writers.FORMATS:
            raise HTTPException(404, f"no format {fmt!r}: one of {', '.join(writers.FORMATS)}")
        content = writers.render_bytes(fmt, current_transcript(row))
        return Response(content, media_type=pages.OUTPUT_TYPES[fmt],
                        headers={"content-disposition": _attachment(_file_name(row, fmt))})

    def outputs_zip(request: Request) -> Response:
        """The job's outputs (its formats; `formats=all`: every one) in one zip, made from
        the stored transcript, so that the set is one version even while a re-render
        replaces the outbox's files one by one; a job whose stored transcript is gone
        gets the files its row records, as they are in the outbox."""
        row = job_row(request.path_params["job_id"])
        every = request.query_params.get("formats") == "all"
        transcript = outputs.load_transcript(config, row.id) if row.state == "done" else None
        formats = writers.FORMATS if every else tuple(outputs.formats_written(row))
        entries: list[tuple[str, bytes]] = []
        if transcript is not None:
            entries = [(_file_name(row, fmt), writers.render_bytes(fmt, transcript)) for fmt in formats]
        elif not every:
            for fmt in formats:
                path = pages.output_file(config, row, fmt)
                if path is not None:
                    entries.append((_file_name(row, fmt), path.read_bytes()))
        if not entries:
            raise HTTPException(404, f"job {row.id} has no outputs to put in a zip")
        moment = row.finished_at.timetuple()[:6] if row.finished_at and row.finished_at.year >= 1980 else _ZIP_EPOCH
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=moment)  # type: ignore[arg-type]
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        stem = Path(row.output_stem).name
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"content-disposition": _attachment(f"{stem}{'-all' if every else ''}.zip")})

    def versions_fragment(request: Request) -> HTMLResponse:
        row = job_row(request.path_params["job_id"])
        return render(request, "_versions.html", job=row, history=_versions(store, row))

    async def edit(request: Request) -> Response:
        """One sentence's new words (`text`), from the page's editor or a plain form."""
        fields = await posted_form(request)
        job_id, number = request.path_params["job_id"], request.path_params["number"]
        text = (fields.get("text") or [None])[0]
        # The page says which sentence it showed under that number: numbers follow the srt's
        # cues, so another correction (a tab, `spkd edit`) may have moved them since it loaded.
        shown_index = (fields.get("index") or [""])[0]

        def correct() -> int:
            if shown_index.isdigit():
                transcript = outputs.load_transcript(config, job_id)
                try:
                    found = corrections.segment_index(transcript, number) if transcript is not None else None
                except NoSuchSegmentError:
                    found = -1
                if found is not None and found != int(shown_index):
                    raise HTTPException(409, f"the transcript changed since this page was loaded: sentence {number} "
                                             "is another one now; reload the page and correct it again")
            return corrections.edit_segment(config, store, job_id, number, text=text, origin="web")

        try:
            if text is None:
                raise HTTPException(400, "give the sentence's new text (the form field `text`)")
            try:
                version = await run_in_threadpool(correct)
            except JobRefusedError as exc:
                raise _refusal(exc) from None
        except HTTPException as refused:
            if _wants_json(request):
                return JSONResponse({"error": refused.detail}, status_code=refused.status_code)
            raise
        if not _wants_json(request):
            return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        transcript = await run_in_threadpool(outputs.load_transcript, config, job_id)
        numbers = corrections.numbering(transcript) if transcript is not None else []
        index = next((n.index for n in numbers if n.number == number), None)
        said = transcript.segments[index].text if transcript is not None and index is not None else text
        # every sentence's number as it is now (a longer text may take one more cue: those after it move)
        return JSONResponse({"version": version, "number": number, "index": index, "text": said,
                             "numbers": {str(n.index): n.number for n in numbers}})

    async def revert(request: Request) -> Response:
        fields = await posted_form(request)
        job_id = request.path_params["job_id"]
        value = (fields.get("version") or [""])[0].strip()
        if not value.isdigit() or len(value) > 18:
            raise HTTPException(400, "version: the number of a version in the job's history")
        try:
            await run_in_threadpool(lambda: corrections.revert(config, store, job_id, int(value), origin="web"))
        except JobRefusedError as exc:
            raise _refusal(exc) from None
        return RedirectResponse(f"/jobs/{job_id}#versions", status_code=303)

    return [
        Route("/transcript-view.css", view_css),
        Route("/jobs/{job_id:job}/segments/{number:int}", edit, methods=["POST"]),
        Route("/jobs/{job_id:job}/revert", revert, methods=["POST"]),
        Route("/jobs/{job_id:job}/versions", versions_fragment),
        Route("/jobs/{job_id:job}/download/{fmt:str}", download),
        Route("/jobs/{job_id:job}/outputs.zip", outputs_zip),
    ]


def _attachment(name: str) -> str:
    """A Content-Disposition for any file name (RFC 6266: a plain ASCII fallback, and the
    name itself percent-encoded in UTF-8)."""
    from urllib.parse import quote

    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=utf-8''{quote(name, safe='')}"
