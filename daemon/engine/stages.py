"""Progress from inside FunASR's `generate` (daemon.progress).

`StageReporter` wraps the sub-models' `inference` methods (and the clusterer) of one
AutoModel, per instance, to tell a job's caller which stage FunASR is in and how much
of the speech the recogniser has done. Each wrapper calls the method it found, so it
composes with the other hooks on the same objects (the empty-batch guard, speaker
batching, the pipeline hooks) in any order, as long as nobody restores an attribute
over it; the engine (daemon.engine.transcriber) installs it last.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from loguru import logger

from daemon.engine.decode import SAMPLE_RATE
from daemon.progress import ProgressCallback

__all__ = ["StageReporter"]


class StageReporter:
    """Tells the current job's ProgressCallback where FunASR's `generate` is.

    FunASR 1.4.16's `inference_with_vad` calls the VAD model once per input, the
    recogniser once per batch of VAD segments (with the speaker model on each batch's
    windows), the punctuation model once, then the clusterer (`cb_model`). The wrappers
    report `vad`, then `asr` with the fraction of the speech (the VAD segments' total
    length) recognised so far, `punctuation` and `speakers`. Outside `job()` they only
    pass calls through. A failing callback never fails the job."""

    def __init__(self, auto_model: Any) -> None:
        self._local = threading.local()
        for stage, owner in (("vad", getattr(auto_model, "vad_model", None)),
                             ("asr", getattr(auto_model, "model", None)),
                             ("punctuation", getattr(auto_model, "punc_model", None))):
            if owner is not None:
                owner.inference = self._wrapped(stage, owner.inference)
        if getattr(auto_model, "cb_model", None) is not None:
            auto_model.cb_model = _ReportingCall(self, "speakers", auto_model.cb_model)

    @contextlib.contextmanager
    def job(self, callback: ProgressCallback) -> Any:
        self._local.callback = callback
        self._local.speech_ms = 0.0
        self._local.done_ms = 0.0
        try:
            yield self
        finally:
            self._local.callback = None

    def report(self, stage: str, fraction: float | None) -> None:
        callback = getattr(self._local, "callback", None)
        if callback is None:
            return
        try:
            callback(stage, fraction)
        except Exception as exc:  # noqa: BLE001 - progress is informational
            logger.debug("progress callback failed: {}", exc)

    def _wrapped(self, stage: str, inference: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "callback", None) is None:
                return inference(*args, **kwargs)
            data_in = args[0] if args else kwargs.get("data_in")
            if stage == "asr":
                self.report("asr", self._asr_fraction())
            else:
                self.report(stage, None)
            out = inference(*args, **kwargs)
            if stage == "vad":
                self._local.speech_ms += _speech_ms(out)
            elif stage == "asr":
                self._local.done_ms += _samples(data_in) * 1000.0 / SAMPLE_RATE
                self.report("asr", self._asr_fraction())
            return out

        wrapper.__wrapped__ = inference  # type: ignore[attr-defined]
        return wrapper

    def speech_seconds(self) -> float:
        """The VAD's speech in the current `job()` so far, in seconds."""
        return getattr(self._local, "speech_ms", 0.0) / 1000.0

    def _asr_fraction(self) -> float | None:
        total = getattr(self._local, "speech_ms", 0.0)
        return min(1.0, self._local.done_ms / total) if total > 0 else None


class _ReportingCall:
    """Stands in for a callable attribute (AutoModel.cb_model): reports a stage, then calls it."""

    def __init__(self, reporter: StageReporter, stage: str, original: Any) -> None:
        self._reporter, self._stage, self._original = reporter, stage, original
        self.__wrapped__ = original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._reporter.report(self._stage, None)
        return self._original(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _speech_ms(vad_out: Any) -> float:
    """The total length of the VAD segments in FSMN-VAD's `([{"value": [[beg_ms, end_ms], ...]}], meta)`."""
    results = vad_out[0] if isinstance(vad_out, tuple) and vad_out else vad_out
    total = 0.0
    for result in results if isinstance(results, list) else ():
        for pair in (result.get("value") or []) if isinstance(result, dict) else ():
            try:
                total += max(0.0, float(pair[1]) - float(pair[0]))
            except (TypeError, ValueError, IndexError):
                continue
    return total


def _samples(data_in: Any) -> int:
    """Samples in one recogniser batch: a list of 1-D waveforms (numpy or torch)."""
    items = data_in if isinstance(data_in, (list, tuple)) else [data_in]
    count = 0
    for item in items:
        try:
            count += int(item.shape[-1]) if hasattr(item, "shape") else len(item)
        except (TypeError, IndexError):
            continue
    return count
