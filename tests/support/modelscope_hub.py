"""A small ModelScope hub on 127.0.0.1 for the fetch tests (no hub is reachable here).

It answers the requests modelscope 1.40 (through modelscope-hub) makes for
`snapshot_download(model_id, revision=..., local_dir=...)` with MODELSCOPE_ENDPOINT
pointing here, and nothing else:

- `GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True`: the file
  listing, `{"Code": 200, "Data": {"Files": [{"Path", "Name", "Type", "Size", "Sha256"}]}}`;
- `GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P`: one file, honouring
  `Range: bytes=N-` with a 206 and a Content-Range, as the hub's storage does;
- `HEAD /`: what `spkd models fetch` probes before downloading.

Anything else (an unknown repository or revision, modelscope's intranet-acceleration
probe) gets the hub's 404. Every request is recorded, and a file can be made to break
off after some bytes, like a dropped connection.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API = "/api/v1/models/"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    range: str | None

    @property
    def model_id(self) -> str:
        """The repository a hub API request is about ("" for others)."""
        if not self.path.startswith(API):
            return ""
        return "/".join(self.path[len(API):].split("/")[:2])

    @property
    def file_path(self) -> str | None:
        """The repository file a download request asks for (None for other requests)."""
        return self.query.get("FilePath") if self.path.endswith("/repo") else None


class FakeModelScope:
    """`repos` maps (model id, revision) to {path in the repository: content}."""

    def __init__(self, repos: Mapping[tuple[str, str], Mapping[str, bytes]]) -> None:
        self.repos = {key: dict(files) for key, files in repos.items()}
        self.requests: list[Request] = []
        self._cuts: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-modelscope", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeModelScope":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def cut_after(self, file_path: str, n_bytes: int, *, times: int = 1) -> None:
        """The next `times` downloads of `file_path` send the full length in their headers
        and then drop the connection after `n_bytes` bytes of the body."""
        with self._lock:
            self._cuts.setdefault(file_path, []).extend([n_bytes] * times)

    def downloads(self) -> list[tuple[str, str, str | None]]:
        """(model id, file path, Range header) of every file download requested so far."""
        with self._lock:
            return [(r.model_id, r.file_path, r.range) for r in self.requests if r.file_path is not None]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # ----------------------------------------------------------------- serving

    def _take_cut(self, file_path: str) -> int | None:
        with self._lock:
            pending = self._cuts.get(file_path)
            return pending.pop(0) if pending else None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _parsed(self) -> Request:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                request = Request(self.command, unquote(parts.path), query, self.headers.get("Range"))
                hub._record(request)
                return request

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._parsed()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                request = self._parsed()
                if request.path.startswith(API):
                    rest = request.path[len(API):]
                    for suffix, serve in (("/repo/files", self._listing), ("/repo", self._file)):
                        if rest.endswith(suffix):
                            files = hub.repos.get((rest[: -len(suffix)], request.query.get("Revision", "master")))
                            if files is not None:
                                serve(files, request)
                                return
                self._json(404, {"Code": 10010205001, "Success": False, "Message": f"{request.path} not exists"})

            def _json(self, status: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _listing(self, files: Mapping[str, bytes], request: Request) -> None:
                entries: list[dict[str, Any]] = []
                folders = sorted({str(p) for path in files for p in Path(path).parents if str(p) != "."})
                for folder in folders:
                    entries.append({"Name": Path(folder).name, "Path": folder, "Type": "tree", "Size": 0})
                for path, content in sorted(files.items()):
                    entries.append({"Name": Path(path).name, "Path": path, "Type": "blob", "Size": len(content),
                                    "Sha256": hashlib.sha256(content).hexdigest(), "Revision": request.query.get("Revision")})
                self._json(200, {"Code": 200, "Success": True, "Message": "success", "Data": {"Files": entries}})

            def _file(self, files: Mapping[str, bytes], request: Request) -> None:
                path = request.query.get("FilePath", "")
                if path not in files:
                    self._json(404, {"Code": 10010205001, "Success": False, "Message": f"file {path} not exists"})
                    return
                content = files[path]
                start = 0
                if request.range and request.range.startswith("bytes="):
                    first, _, last = request.range[len("bytes="):].partition("-")
                    start = int(first)
                    end = int(last) if last else len(content) - 1
                    if start >= len(content):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(content)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = content[start : end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(content)}")
                else:
                    body = content
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = hub._take_cut(path)
                if cut is None:
                    self.wfile.write(body)
                    return
                # a dropped connection: part of the body, then the socket closes
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        return Handler


def real_layout_repo(role: str, weights_size: int = 64 * 1024) -> dict[str, bytes]:
    """A repository laid out as the pinned real one: its configuration.json, every file
    that names (config, weights, tokenizer, frontend files), a README and an example
    file. The contents are filler, so this serves download tests, not loading."""
    from daemon.engine.models import PINNED

    pinned = PINNED[role]
    files: dict[str, bytes] = {
        "configuration.json": json.dumps(pinned.configuration(), indent=2).encode(),
        "README.md": f"# {pinned.title}\n".encode(),
        "example/README.md": b"examples\n",
    }

    for name in pinned.files:
        if name == pinned.weights:
            # deterministic, incompressible-looking filler of the asked size
            seed = hashlib.sha256(role.encode()).digest()
            blocks = (weights_size + len(seed) - 1) // len(seed)
            files[name] = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(blocks))[
                :weights_size]
        elif name == pinned.file_path_metas.get("config"):
            files[name] = b"model: Placeholder\n"
        else:
            files[name] = f"{name} of {pinned.model_id}\n".encode()
    return files
