"""The dashboard's overview shows the files lying in the inbox that are not jobs yet,
from the same listing as `spkd status` (daemon.intake.listing)."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from daemon.web.app import create_app
from tests.support.web import loaded, populate, write_config

HTML = {"accept": "text/html"}


def test_the_overview_lists_the_inbox_files_with_their_reasons(tmp_path) -> None:
    config = loaded(write_config(tmp_path, watch={"empty_fail_seconds": 600}))
    populate(config)
    config.paths.inbox.mkdir(parents=True, exist_ok=True)
    (config.paths.inbox / "notes.txt").write_text("milk")
    (config.paths.inbox / "empty.m4a").write_bytes(b"")
    (config.paths.inbox / "<b>odd<i>.txt").write_text("x")
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as client:
        for path in ("/", "/fragments/overview"):
            page = client.get(path, headers=HTML).text
            rows = dict(re.findall(r'<tr class="inbox-\w+" data-name="([^"]+)">(.*?)</tr>', page, re.S))
            assert sorted(rows) == ["&lt;b&gt;odd&lt;i&gt;.txt", "empty.m4a", "notes.txt"], page
            assert "never taken: extension not in watch.extensions (.txt)" in rows["notes.txt"]
            assert "<td>empty</td>" in rows["empty.m4a"]
            assert re.search(r"fails as `empty` in (9|10) min", rows["empty.m4a"])
        (config.paths.inbox / "notes.txt").unlink()
        (config.paths.inbox / "empty.m4a").unlink()
        (config.paths.inbox / "<b>odd<i>.txt").unlink()
        assert "No file waiting." in client.get("/fragments/overview", headers=HTML).text
