"""The dashboard: a Starlette application over one config's database and folders.

Routes (scripts and monitoring may rely on these paths):

    GET  /                              overview (its live part: /fragments/overview)
    GET  /jobs?state=&since=&until=&name=&page=
    GET  /jobs/<id>                     transcript, player, outputs, history (live part: /jobs/<id>/live)
    GET  /jobs/<id>/audio               the job's archived source (HTTP Range)
    GET  /jobs/<id>/outputs/<format>    one of the job's outputs, as a download
    POST /jobs/<id>/retry               run a failed job again (daemon.jobs.retry, as `spkd retry`)
    POST /jobs/<id>/speakers            rename speakers (daemon.jobs.rename.rename_speakers, as `spkd speakers`)
    POST /upload                        files into the inbox (daemon.web.upload)
    GET  /search?q=                     search transcripts (daemon.store.search.search, as `spkd search`)
    GET  /voices                        the voice library and the enrolments under way
    POST /voices                        enrol: a recording into paths.voices/<Name>/ (the daemon embeds it)
    POST /voices/remove                 remove a voice (daemon.voices.library.remove, as `spkd voices remove`)
    cancel, remove (with its confirmation page), a voice's samples and its rename: daemon.web.actions
    a transcript's corrections, versions, downloads of any format and zips: daemon.web.transcript_routes
    GET  /metrics                       Prometheus text format (daemon.web.metrics)
    GET  /login, POST /login, POST /logout

Pages are rendered on the server (Jinja2, autoescaped: every file name, speaker name
and sentence is text, never markup); the few scripts are static files of the package
(daemon/web/static), loaded from this origin only (see daemon.web.security). Handlers
that read the database are plain functions, which Starlette runs in its thread pool.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Mount, Route
from starlette.types import Message
from starlette.staticfiles import StaticFiles

from daemon import __version__, files, writers
from daemon.intake import voice_folder
from daemon.jobs import outputs, rename
from daemon.store import search
from daemon.intake.probe import probe
from daemon.jobs import retry
from daemon.config import Config
from daemon.errors import (
    DatabaseUnavailableError,
    JobRefusedError,
    NoSuchJobError,
    SpkdError,
    UnusableDatabaseError,
    VoiceError,
)
from daemon.options import normal_voice_name
from daemon.progress import STAGES
from daemon.store.schema import JOB_STATES
from daemon.store import Job, JobFilter, Store
from daemon.voices import library
from daemon.voices.matching import check_name
from daemon.web import actions, pages, summary_panel, transcript_routes
from daemon.web.metrics import registry_for
from daemon.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    HostRule,
    LoginThrottle,
    SecurityMiddleware,
    client_of,
    cookie_header,
    csrf_ok,
    session_value,
)
from daemon.web.upload import UploadError, receive_upload

__all__ = ["LIVE_SECONDS", "PAGE_SIZE", "create_app"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
# How often the live parts of a page refresh themselves.
LIVE_SECONDS = 2.0
SESSION_DAYS = 30
# The most pages a listing may be asked for (an offset past SQLite's 64-bit integers is a 400, not a 500).
MAX_PAGE = 10**9


class _JobId(Convertor[int]):
    """`{job_id:job}`: a job id that fits the database's 64-bit integers (at most 18
    digits); a longer number is no route, so 404, never an overflow deeper down."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("job", _JobId())


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(hms=_hms, when=_when, percent=_percent, duration=_duration, compact=_compact)
    env.globals.update(version=__version__, stages=STAGES, live_seconds=LIVE_SECONDS)
    return env


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _percent(fraction: float | None) -> str:
    return f"{100 * (fraction or 0):.0f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str) if value else ""


def _parse_day(value: str, field_name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time())
    except (ValueError, OverflowError):
        raise HTTPException(400, f"{field_name}: not a date (YYYY-MM-DD): {value!r}") from None


def _safe_next(value: str | None, default: str = "/") -> str:
    """A local path to go back to; anything else (another site, `//host`) is `default`."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def limited(request: Request, config: Config) -> Request:
    """`request` whose body is refused past web.max_upload_mb (413), by its length up
    front and by what arrives: Starlette's form parser spools files to disk, and a
    chunked body says no length."""
    limit = config.web.max_upload_mb * 2**20
    too_large = f"larger than web.max_upload_mb ({config.web.max_upload_mb} MB)"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, too_large)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, too_large)
        return message

    return Request(request.scope, receive)


def create_app(config: Config, listen: str | None = None) -> Starlette:
    """The dashboard over `config`, served on `listen` (default web.listen, else
    127.0.0.1:8765): its host decides which Host headers are this dashboard's own."""
    from daemon.config import parse_listen
    from daemon.web.server import DEFAULT_LISTEN

    store = Store(config.database_url, host=config.host)
    hosts = HostRule(parse_listen(listen or config.web.listen or DEFAULT_LISTEN)[0], config.web.allowed_hosts)
    throttle = LoginThrottle()
    env = _templates()
    # Retry is offered only where it can change how the job ends (the rule of `spkd retry`).
    env.globals.update(can_retry=lambda job: retry.offered(config, job),
                       retry_refusal=lambda job: retry.why_not(config, job), **actions.template_globals())
    env.globals.update(summary_panel.template_globals(config, store))  # the job page's summary panel
    metrics_registry = registry_for(config, store)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        state = request.scope.get("state", {})
        html = env.get_template(name).render(request=request, csrf=state.get("csrf", ""), csrf_field=CSRF_FIELD,
                                             logged_in=state.get("auth") == "cookie",
                                             token_required=state.get("token_required", False), **context)
        return HTMLResponse(html, status_code=status)

    def job_row(job_id: int) -> Job:
        row = store.job(job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        return row

    async def posted_form(request: Request) -> dict[str, list[str]]:
        """The urlencoded form of a POST, after its CSRF token was checked."""
        form = await request.form()
        fields: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
        submitted = request.headers.get(CSRF_HEADER) or (fields.get(CSRF_FIELD) or [None])[0]
        if not csrf_ok(request.scope, submitted):
            raise HTTPException(403, "the CSRF token is missing or wrong: reload the page and try again")
        return fields

    # --- pages ---------------------------------------------------------------------

    def overview_page(request: Request) -> HTMLResponse:
        return render(request, "overview.html", o=pages.overview(config, store), page="overview",
                      formats=writers.FORMATS, max_upload_mb=config.web.max_upload_mb)

    def overview_fragment(request: Request) -> HTMLResponse:
        return render(request, "_overview_live.html", o=pages.overview(config, store))

    def jobs_page(request: Request) -> HTMLResponse:
        q = request.query_params
        state = q.get("state") or None
        if state is not None and state not in JOB_STATES:
            raise HTTPException(400, f"state: one of {', '.join(JOB_STATES)}")
        since, until = _parse_day(q.get("since", ""), "since"), _parse_day(q.get("until", ""), "until")
        name = (q.get("name") or "").strip() or None
        try:
            page = max(1, int(q.get("page") or 1))
        except ValueError:
            raise HTTPException(400, "page: a number") from None
        if page > MAX_PAGE:
            raise HTTPException(400, f"page: a number from 1 to {MAX_PAGE}")
        # The last day there is has no day after it: it bounds nothing.
        where = JobFilter(state=state, since=since,
                          until=until + dt.timedelta(days=1) if until and until.date() < dt.date.max else None,
                          name_contains=name)
        rows, total = store.job_page(where, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        filters = {k: v for k, v in (("state", state), ("since", q.get("since")), ("until", q.get("until")),
                                     ("name", name)) if v}
        pages_total = max(1, -(-total // PAGE_SIZE))

        def link(number: int) -> str:
            return "/jobs?" + urlencode({**filters, "page": number})

        return render(request, "jobs.html", rows=rows, total=total, page_number=page, pages_total=pages_total,
                      previous=link(page - 1) if page > 1 else None,
                      next_link=link(page + 1) if page < pages_total else None, filters=filters,
                      states=JOB_STATES, page="jobs")

    def job_page(request: Request) -> HTMLResponse:
        view = pages.job_view(config, store, request.path_params["job_id"])
        if view is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']}")
        return render(request, "job.html", v=view, job=view.row, page="jobs")

    def job_fragment(request: Request) -> HTMLResponse:
        row = job_row(request.path_params["job_id"])
        return render(request, "_job_live.html", job=row, events=store.events(row.id))

    def job_audio(request: Request) -> FileResponse:
        row = job_row(request.path_params["job_id"])
        source = pages.archived_source(config, row)
        if source is None:
            raise HTTPException(404, "this job's source is not in the archive")
        suffix = source.suffix.lower().lstrip(".")
        return FileResponse(source, media_type=pages.AUDIO_TYPES.get(suffix, "application/octet-stream"))

    def job_output(request: Request) -> FileResponse:
        row = job_row(request.path_params["job_id"])
        fmt = request.path_params["fmt"]
        path = pages.output_file(config, row, fmt) if fmt in writers.FORMATS else None
        if path is None:
            raise HTTPException(404, f"job {row.id} has no {fmt} output")
        name = Path(row.output_stem).name + writers.extension(fmt)
        return FileResponse(path, media_type=pages.OUTPUT_TYPES[fmt], filename=name,
                            content_disposition_type="attachment")

    async def job_retry(request: Request) -> Response:
        """What `spkd retry JOB` does (daemon.jobs.retry.retry_job, the same rule): 409
        with the reason when a retry cannot change how the job ends."""
        fields = await posted_form(request)
        job_id = request.path_params["job_id"]
        try:
            await run_in_threadpool(lambda: retry.retry_job(config, store, job_id, probe=probe))
        except NoSuchJobError as exc:
            raise HTTPException(404, exc.message) from None
        except JobRefusedError as exc:
            raise HTTPException(409, exc.message) from None
        return RedirectResponse(_safe_next((fields.get("next") or [None])[0], f"/jobs/{job_id}"), status_code=303)

    async def job_speakers(request: Request) -> Response:
        """The rename form: `name:<label>` per speaker (label: the cluster's own,
        Speaker.label) and `enrol`; the speakers whose field changed to a name are
        renamed by daemon.jobs.rename.rename_speakers, which re-renders every output."""
        fields = await posted_form(request)
        job_id = request.path_params["job_id"]
        row = await run_in_threadpool(job_row, job_id)
        transcript = await run_in_threadpool(outputs.load_transcript, config, job_id) \
            if row.state == "done" else None
        if transcript is None:
            raise HTTPException(400, f"job {job_id} is not a done transcription with a stored transcript")
        by_label = {s.label: s for s in transcript.speakers}
        names: dict[str, str] = {}
        for key, values in fields.items():
            if not key.startswith("name:") or not values:
                continue
            label, value = key[len("name:"):], normal_voice_name(values[0])
            speaker = by_label.get(label)
            if speaker is None:
                raise HTTPException(400, f"job {job_id} has no speaker {label}")
            if value and value != (speaker.name or ""):
                # rename_speakers takes a speaker as the outputs show it first, then by its
                # label; the shown name is unambiguous, a label is not (once Speaker1 is
                # named, the unnamed Speaker3 shows as Speaker2).
                names[speaker.display] = value
        if not names:
            raise HTTPException(400, "no speaker's name changed: type a new name into a speaker's field")
        try:
            await run_in_threadpool(lambda: rename.rename_speakers(config, store, job_id, names,
                                                                   enrol_voices=bool(fields.get("enrol"))))
        except VoiceError as exc:
            raise HTTPException(400, exc.message) from None
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    async def upload(request: Request) -> JSONResponse:
        if not csrf_ok(request.scope, request.headers.get(CSRF_HEADER)):
            return JSONResponse({"error": "the CSRF token is missing or wrong: reload the page"}, status_code=403)
        try:
            saved = await receive_upload(config, request.headers, request.stream())
        except UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse({"files": [{"name": u.name, "saved_as": u.saved_as, "size_bytes": u.size_bytes}
                                       for u in saved]})

    def search_page(request: Request) -> HTMLResponse:
        query = (request.query_params.get("q") or "").strip()
        # The filters of `spkd search`: --speaker, --since, --until (dates as it reads them).
        filters = {k: (request.query_params.get(k) or "").strip() for k in ("speaker", "since", "until")}
        result, problem = None, None
        if query:
            try:
                result = search.search(
                    store, query, limit=100, speaker=filters["speaker"] or None,
                    since=search.parse_date_bound(filters["since"], end=False) if filters["since"] else None,
                    until=search.parse_date_bound(filters["until"], end=True) if filters["until"] else None)
            except SpkdError as exc:
                problem = str(exc)
        return render(request, "search.html", query=query, filters=filters, result=result, problem=problem,
                      page="search")

    def voices_page(request: Request) -> HTMLResponse:
        return render(request, "voices.html", v=pages.voices_view(config, store), page="voices",
                      max_upload_mb=config.web.max_upload_mb, samples=actions.samples_by_voice(config, store))

    async def voices_enrol(request: Request) -> Response:
        """A recording of one voice (multipart: `name`, `recording`) for the library. This
        process never embeds: the file goes into paths.voices/<name>/ (daemon.intake.
        voice_folder.drop_for_enrolment), where the daemon's folder scan queues it for a worker."""
        async with limited(request, config).form(max_files=1, max_fields=10) as form:
            submitted = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
            if not csrf_ok(request.scope, submitted if isinstance(submitted, str) else None):
                raise HTTPException(403, "the CSRF token is missing or wrong: reload the page and try again")
            name, recording = form.get("name"), form.get("recording")
            if not isinstance(name, str) or not name.strip() or recording is None or isinstance(recording, str):
                raise HTTPException(400, "give a name and a recording")
            try:
                check_name(name)  # before the recording is copied anywhere
            except VoiceError as exc:
                raise HTTPException(400, exc.message) from None
            folder = config.paths.state / "uploads"
            folder.mkdir(parents=True, exist_ok=True)
            suffix = Path(files.safe_file_name(recording.filename or "")).suffix
            fd, temp_name = tempfile.mkstemp(prefix="voice-", suffix=suffix, dir=folder)
            fcntl.flock(fd, fcntl.LOCK_EX)  # the sweep at start (upload.sweep_abandoned) leaves it be
            try:
                with os.fdopen(fd, "wb") as handle:
                    while chunk := await recording.read(1 << 20):
                        await run_in_threadpool(handle.write, chunk)
                await run_in_threadpool(lambda: voice_folder.drop_for_enrolment(
                    config, name, Path(temp_name), file_name=recording.filename or ""))
            except VoiceError as exc:
                raise HTTPException(400, exc.message) from None
            finally:
                Path(temp_name).unlink(missing_ok=True)
        return RedirectResponse("/voices", status_code=303)

    async def voices_remove(request: Request) -> Response:
        fields = await posted_form(request)
        name = (fields.get("name") or [""])[0]
        try:
            await run_in_threadpool(library.remove, config, store, name)
        except VoiceError as exc:
            raise HTTPException(400, exc.message) from None
        return RedirectResponse("/voices", status_code=303)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    def login_page(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        if not config.web.token:
            return RedirectResponse(nxt, status_code=303)
        return render(request, "login.html", next=nxt, problem=None, page="login")

    async def login(request: Request) -> Response:
        fields = await posted_form(request)
        nxt = _safe_next((fields.get("next") or [None])[0])
        token = config.web.token
        if not token:
            return RedirectResponse(nxt, status_code=303)
        import hmac

        client = client_of(request.scope)
        wait = throttle.wait_seconds(client)
        if wait > 0:
            return render(request, "login.html", status=429, next=nxt, page="login",
                          problem=f"too many wrong tokens: try again in {wait:.0f} s")
        given = (fields.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            throttle.failed(client)
            return render(request, "login.html", status=401, next=nxt, problem="wrong token", page="login")
        throttle.succeeded(client)
        response = RedirectResponse(nxt, status_code=303)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, session_value(token),
                                                            max_age=SESSION_DAYS * 86400))
        return response

    async def logout(request: Request) -> Response:
        await posted_form(request)
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", max_age=0))
        return response

    # Every error an HTML page in the layout with a way back (JSON and text where asked for).
    error_page = actions.error_page(render)

    routes: list[Any] = [
        Route("/", overview_page),
        Route("/fragments/overview", overview_fragment),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id:job}", job_page),
        Route("/jobs/{job_id:job}/live", job_fragment),
        Route("/jobs/{job_id:job}/audio", job_audio),
        Route("/jobs/{job_id:job}/outputs/{fmt:str}", job_output),
        Route("/jobs/{job_id:job}/retry", job_retry, methods=["POST"]),
        Route("/jobs/{job_id:job}/speakers", job_speakers, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/search", search_page),
        Route("/voices", voices_page),
        Route("/voices", voices_enrol, methods=["POST"]),
        Route("/voices/remove", voices_remove, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *actions.routes(config, store, render, posted_form),
        *transcript_routes.routes(config, store, render, posted_form, env),
        *summary_panel.routes(config, store, render, posted_form),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[..., Any]] = {HTTPException: error_page, 404: error_page, 405: error_page,
                                               DatabaseUnavailableError: error_page,
                                               UnusableDatabaseError: error_page, Exception: error_page}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(SecurityMiddleware, token=config.web.token, hosts=hosts, throttle=throttle)
    app.state.store = store
    return app
