"""Uploads: files dropped onto the dashboard go into the inbox as if dropped there.

The request body (multipart/form-data) is parsed as it arrives (python-multipart's
streaming parser) and each file written straight into the inbox under a hidden name
(`.spkd-upload-<random>.part`: the watcher ignores dot-names and `*.part`), counted
against `web.max_upload_mb` as it comes (a body over the limit is cut off and its
files removed). Only once the whole body is in and the options are valid is each
file given its real name: a safe version of the name it had (daemon.files.
safe_file_name; the watcher's own rules decide whether it would be taken at all),
made unique with the inbox's " (n)" rule (and short enough for its sidecar's name), its sidecar `<name>.spkd.json` written first
(the watcher takes a file only once its sidecar has settled), then the file linked
into place (a link never overwrites a file that appeared meanwhile).

Options come as form fields `speakers`, `hotwords` (comma- or newline-separated),
`formats` (repeatable) and `priority`, checked by daemon.options.validate before
anything gets its real name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, AsyncIterator, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from daemon import files, names, options
from daemon.jobs import spool
from daemon.config import Config
from daemon.errors import OptionsError
from daemon.intake.stability import ignored_because

__all__ = ["UploadError", "Uploaded", "receive_upload", "sweep_abandoned"]

MAX_FIELD_BYTES = 64 * 1024
MAX_FILES = 100
TEMP_PREFIX = ".spkd-upload-"


class UploadError(Exception):
    """An upload refused: `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Uploaded:
    name: str  # the original name as the browser sent it
    saved_as: str = ""  # the inbox-relative name it got
    size_bytes: int = 0


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    temp: Path | None = None
    handle: BinaryIO | None = None
    size: int = 0


class _Receiver:
    """Collects parser callbacks; the async loop then does the file writes they ask for."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.part = _Part()
        self.parts: list[_Part] = []
        self.fields: dict[str, list[str]] = {}
        self.pending: list[tuple[_Part, bytes]] = []
        self._header_name = b""
        self._header_value = b""

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers.append((self._header_name.lower(), self._header_value))
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = dict(self.part.headers).get(b"content-disposition", b"")
        _kind, params = parse_options_header(disposition)
        self.part.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            if sum(1 for p in self.parts if p.filename is not None) >= MAX_FILES:
                raise UploadError(f"at most {MAX_FILES} files in one upload")
            self.part.filename = params[b"filename"].decode("utf-8", "replace")
            self.part.temp = self.inbox / f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
            fd = os.open(self.part.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)  # while held, sweep_abandoned leaves the file alone
            self.part.handle = os.fdopen(fd, "wb")
        self.parts.append(self.part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = bytes(data[start:end])
        if self.part.handle is not None:
            self.pending.append((self.part, chunk))
        else:
            if len(self.part.data) + len(chunk) > MAX_FIELD_BYTES:
                raise UploadError(f"form field {self.part.name!r} is longer than {MAX_FIELD_BYTES} bytes")
            self.part.data.extend(chunk)

    def on_part_end(self) -> None:
        if self.part.filename is None:
            self.fields.setdefault(self.part.name, []).append(self.part.data.decode("utf-8", "replace"))

    def cleanup(self) -> None:
        for part in self.parts:
            if part.handle is not None and not part.handle.closed:
                part.handle.close()
            if part.temp is not None:
                part.temp.unlink(missing_ok=True)


def upload_options(fields: dict[str, list[str]]) -> dict[str, Any]:
    """The sidecar options of an upload's form fields, validated (OptionsError)."""
    raw: dict[str, Any] = {}
    speakers = (fields.get("speakers") or [""])[0].strip()
    if speakers:
        try:
            raw["speakers"] = int(speakers)
        except ValueError:
            raw["speakers"] = speakers  # validate() names the key and the bad value
    words = [w.strip() for text in fields.get("hotwords", []) for w in re.split(r"[,\n]", text) if w.strip()]
    if words:
        raw["hotwords"] = words
    formats = [f.strip() for f in fields.get("formats", []) if f.strip()]
    if formats:
        raw["formats"] = formats
    priority = (fields.get("priority") or [""])[0].strip()
    if priority:
        try:
            raw["priority"] = int(priority)
        except ValueError:
            raw["priority"] = priority
    return options.validate(raw, source="upload options")


# A sidecar's name is the file's and this: room the file's name keeps for it.
SIDECAR_RESERVE_BYTES = files.name_bytes(spool.SIDECAR_SUFFIX)


def _target_name(config: Config, filename: str) -> str:
    problem = names.text_problem(filename, what="a file's name")
    if problem is not None:
        # The one name rule (daemon.names): no control characters (they would reach
        # terminals through spkd jobs), no bidirectional controls (shown as it is, a
        # right-to-left override makes `evil\u202Evaw.exe` read as `evilexe.wav`).
        raise UploadError(f"{ascii(filename)}: {problem}")
    name = files.safe_file_name(filename, reserve_bytes=SIDECAR_RESERVE_BYTES)
    reason = ignored_because(config, PurePosixPath(name))
    if reason is not None:
        raise UploadError(f"{name}: not taken from the inbox ({reason}); allowed extensions: "
                          f"{', '.join(config.watch.extensions)}")
    return name


def _place(config: Config, part: _Part, name: str, sidecar_text: str | None) -> str:
    """Give one written upload its real name in the inbox; returns that name."""
    inbox = config.paths.inbox.resolve()
    assert part.temp is not None
    suffix = PurePosixPath(name).suffix
    stem = name[: len(name) - len(suffix)] if suffix else name

    def taken(candidate: str) -> bool:
        path = inbox / candidate
        return path.exists() or path.is_symlink() or spool.sidecar_of(path).exists()

    while True:
        target = files.inside(inbox, files.numbered(stem, taken, suffix,
                                                    max_bytes=files.NAME_MAX_BYTES - SIDECAR_RESERVE_BYTES))
        sidecar = spool.sidecar_of(target)
        if sidecar_text is not None:
            files.atomic_write(sidecar, sidecar_text)
        try:
            os.link(part.temp, target)
        except FileExistsError:
            if sidecar_text is not None:
                sidecar.unlink(missing_ok=True)
            continue  # someone dropped a file of that name just now: take the next
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(part.temp, target)  # a filesystem without hard links
        part.temp.unlink(missing_ok=True)
        files.fsync_dir(inbox)
        return target.relative_to(inbox).as_posix()


async def receive_upload(config: Config, headers: Any, stream: AsyncIterator[bytes]) -> list[Uploaded]:
    """Parse a multipart upload into the inbox (see the module docstring); UploadError
    when it is refused, in which case nothing of it stays in the inbox."""
    limit = config.web.max_upload_mb * 2**20
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadError(f"the upload is larger than web.max_upload_mb ({config.web.max_upload_mb} MB)", 413)
    kind, params = parse_options_header(headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("expected multipart/form-data with files in it")
    inbox = config.paths.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(inbox)
    received = 0
    try:
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())
        async for chunk in stream:
            received += len(chunk)
            if received > limit:
                raise UploadError(f"the upload is larger than web.max_upload_mb ({config.web.max_upload_mb} MB)",
                                  413)
            parser.write(chunk)
            for part, data in receiver.pending:
                assert part.handle is not None
                await run_in_threadpool(part.handle.write, data)
                part.size += len(data)
            receiver.pending.clear()
        parser.finalize()
        uploads = [p for p in receiver.parts if p.filename is not None]
        if not uploads:
            raise UploadError("no file in the upload")
        try:
            sidecar = upload_options(receiver.fields)
        except OptionsError as exc:
            raise UploadError(str(exc)) from None
        sidecar_text = json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n" if sidecar else None
        names = [_target_name(config, p.filename or "") for p in uploads]
        for part in uploads:
            if part.size == 0:
                raise UploadError(f"{part.filename}: the file is empty")
        results = []
        for part, name in zip(uploads, names):
            assert part.handle is not None
            await run_in_threadpool(_finish, part.handle)
            saved = await run_in_threadpool(_place, config, part, name, sidecar_text)
            results.append(Uploaded(name=part.filename or "", saved_as=saved, size_bytes=part.size))
        return results
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed body is the client's problem
        if isinstance(exc, OSError):
            raise
        raise UploadError(f"malformed upload: {exc}") from None
    finally:
        receiver.cleanup()


def sweep_abandoned(config: Config) -> list[Path]:
    """Remove what an upload killed midway left behind: `.spkd-upload-*.part` in the inbox
    and `voice-*` under paths.state/uploads whose writer is gone (no process holds the
    lock every writer takes on its file). Called as a dashboard starts; returns what went."""
    removed = []
    candidates = list(config.paths.inbox.glob(f"{TEMP_PREFIX}*.part")) if config.paths.inbox.is_dir() else []
    uploads = config.paths.state / "uploads"
    if uploads.is_dir():
        candidates += list(uploads.glob("voice-*"))
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # still being written
        else:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _finish(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
