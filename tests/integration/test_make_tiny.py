"""What `spkd models make-tiny` said while it built the tiny models the suite uses
(tests/support/models.py keeps its output beside them): piped, one line per stage, then
the time it took. Building again costs minutes, so the build the suite needs anyway is
the one looked at; the rendering itself is tested in tests/unit/test_tiny_models_cli.py."""

from __future__ import annotations

import re

import pytest

from daemon.engine.models import ModelDirs
from daemon.engine.tiny_models import build_stages
from tests.support.models import MAKE_TINY_LOG

pytestmark = pytest.mark.integration


def test_make_tiny_piped_says_each_stage_once_and_the_time_it_took(tiny_models: ModelDirs) -> None:
    lines = (tiny_models.asr.parent / MAKE_TINY_LOG).read_text(encoding="utf-8").splitlines()
    stages = build_stages(trained=True)  # the suite's machines have espeak-ng
    said = [line for line in lines if line.startswith("[")]
    assert [re.sub(r" \(at [^)]*\)$", "", line) for line in said] == \
        [f"[{i}/{len(stages)}] {title}" for i, title in enumerate(stages, start=1)], lines
    assert "\r" not in "".join(lines)  # no line rewritten in place where nobody watches a terminal
    [total] = [line for line in lines if line.startswith("built tiny test models in ")]
    assert re.search(r" in (\d+ min( \d+ s)?|\d+ s)$", total), total
    # then, on stdout, each model's folder (built under a staging name, renamed since)
    assert [line.split()[0] for line in lines[lines.index(total) + 1:]] == ["asr", "vad", "punc", "spk"]
