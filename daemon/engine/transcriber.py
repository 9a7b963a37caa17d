"""FunASR wrapper: one audio file plus per-job options in, one `Transcript` out.

This is the only module that knows FunASR's result shape. Like every module of
daemon/engine/ (the only room that imports torch or funasr), it imports them lazily
inside functions, so that importing it stays cheap for the supervisor and the CLI.

What FunASR 1.4.16 gives back from `AutoModel.generate` with a VAD model (one dict per
input, and *no dict at all* when nothing was recognised):

    {"key": str, "text": str, "timestamp": [[start_ms, end_ms], ...],
     "sentence_info": [{"start": ms, "end": ms, "text": str | list[str],
                        "spk": int (only with a speaker model), "timestamp": [...]}, ...]}

`sentence_info` comes with a speaker model, or without one when `sentence_timestamp=True`.

Beside it in daemon/engine/: decode.py turns any input into samples with ffmpeg;
stages.py reports which stage FunASR is in (installed last, over the other hooks);
speaker_batching.py and pipeline_hooks.py (used only from here) know a few more pieces
of FunASR's inside: how `inference_with_vad` feeds the speaker model and the clusterer,
where the VAD and the timestamps read device tensors; they batch the speaker stage and
move host work off the device, pinned to the tested FunASR versions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

# decode_audio is looked up in this module when called: bench/workers.py times it by
# replacing this module's name.
from daemon.engine.decode import (
    AUTO_LEVEL_DIFFERENCE_DB,
    AUTO_SPLIT_SHARE,
    SAMPLE_RATE,
    channel_separation,
    decode_audio,
    ffmpeg_missing,
)
from daemon.engine.device_probe import torch_device
from daemon.engine.models import ModelDirs, configured_model_dirs, import_funasr, read_model_meta, require_model_dirs
from daemon.engine.stages import StageReporter
from daemon.config import Config, OutputConfig
from daemon.errors import DeviceError, EnrolmentError, OutOfMemoryError, is_out_of_memory
from daemon.logs import printed_to_log
from daemon.options import check_speakers, hotword_words
from daemon.progress import ProgressCallback
from daemon.transcript import (
    EngineInfo,
    ModelInfo,
    Segment,
    Timing,
    Transcript,
    VoicePrint,
    describe_source,
    number_speakers,
    raw_speaker_numbers,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OOM_RETRIES", "Engine", "Transcriber", "guard_empty_batches", "load_configured", "rows_from_result",
           "transcribe_with_retries"]


# --------------------------------------------------------------------------- results


def _sentence_text(value: Any) -> str:
    # FunASR's timestamp_sentence returns a list of words when punctuation is missing
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value or "")


def rows_from_result(
    result: dict[str, Any], duration: float, with_speakers: bool, timeline: Any = None,
    max_pause_seconds: float | None = None,
) -> list[tuple[float, float, int | None, str]]:
    """(start s, end s, raw speaker, text) rows from one FunASR result dict; with the
    speaker `timeline` FunASR assigned sentences from, a sentence that spans a change of
    speaker becomes one row per speaker, and with `max_pause_seconds` one that spans a
    longer pause between two tokens is cut there (daemon.engine.speaker_turns)."""
    rows: list[tuple[float, float, int | None, str]] = []
    sentences = result.get("sentence_info")
    if sentences:
        for sentence in sentences:
            text = _sentence_text(sentence.get("text", sentence.get("sentence"))).strip()
            if not text:
                continue
            start = float(sentence.get("start", 0)) / 1000.0
            end = float(sentence.get("end", start * 1000.0)) / 1000.0
            spk = sentence.get("spk") if with_speakers else None
            pieces = None
            speaker_timeline = timeline if with_speakers else None
            if sentence.get("timestamp") and (speaker_timeline or max_pause_seconds is not None):
                from daemon.engine.speaker_turns import cut_sentence

                pieces = cut_sentence(text, start, end, sentence["timestamp"], speaker_timeline, max_pause_seconds)
            if pieces:
                rows.extend((a, b, (None if spk is None else int(spk)) if k is None else k, t)
                            for a, b, k, t in pieces)
            else:
                rows.append((start, end, None if spk is None else int(spk), text))
    else:
        # No sentence split (e.g. punctuation alignment failed): one segment over the
        # recognised span, which is still better than dropping the text.
        text = _sentence_text(result.get("text")).strip()
        stamps = result.get("timestamp") or []
        if text:
            start = float(stamps[0][0]) / 1000.0 if stamps else 0.0
            end = float(stamps[-1][1]) / 1000.0 if stamps else duration
            rows.append((start, end, None, text))
    clamped = []
    for start, end, spk, text in rows:
        start = min(max(0.0, start), duration)
        end = min(max(start, end), duration)
        if end <= start:  # a zero-length sentence: give it a millisecond, inside the audio
            if start + 0.001 <= duration:
                end = start + 0.001
            else:
                start = max(0.0, end - 0.001)
        clamped.append((start, end, spk, text))
    return clamped


def _channel_rows(results: Sequence[dict[str, Any]], duration: float, speaker: int,
                  max_pause_seconds: float | None) -> list[tuple[float, float, int | None, str]]:
    rows: list[tuple[float, float, int | None, str]] = []
    for result in results or []:
        rows.extend((s, e, speaker, text) for s, e, _, text
                    in rows_from_result(result, duration, False, max_pause_seconds=max_pause_seconds))
    return rows


def guard_empty_batches(asr_model: Any) -> None:
    """Make a batch with no recognised token return one empty result per input.

    SeACo Paraformer returns no result at all for such a batch (plain Paraformer returns
    an empty one); FunASR 1.4.16's speaker path then indexes the missing result
    (IndexError in inference_with_vad) and the whole file fails. Any VAD segment for
    which the CIF predictor fires no token (a click, a breath) can trigger it."""
    original = asr_model.inference
    if getattr(original, "_spkd_guard", False):
        return

    def inference(data_in: Any, data_lengths: Any = None, key: Any = None, **kwargs: Any) -> Any:
        out = original(data_in, data_lengths=data_lengths, key=key, **kwargs)
        results = out[0] if isinstance(out, tuple) and out else out
        if isinstance(results, list) and not results:
            n = len(data_in) if isinstance(data_in, (list, tuple)) else 1
            keys = list(key) if isinstance(key, (list, tuple)) else [key] * n
            keys += [None] * (n - len(keys))
            empty = [{"key": keys[i], "text": "", "timestamp": []} for i in range(n)]
            meta = out[1] if isinstance(out, tuple) and len(out) > 1 else {}
            return empty, meta
        return out

    inference._spkd_guard = True  # type: ignore[attr-defined]
    inference.__wrapped__ = original  # type: ignore[attr-defined]
    asr_model.inference = inference


def _cluster_centers(results: Sequence[dict[str, Any]] | None) -> Any:
    """FunASR's `spk_embedding_center` of the (one) input: one mean embedding per raw
    speaker id, or None when it did not cluster (no speaker model, no speech)."""
    return next((r.get("spk_embedding_center") for r in results or []
                 if r.get("spk_embedding_center") is not None), None)


def _speaker_centroids(results: Sequence[dict[str, Any]] | None,
                       numbers: Mapping[int, int]) -> dict[int, tuple[float, ...]]:
    """Each speaker's centroid from FunASR's `spk_embedding_center` (one row per raw
    speaker id of the one input), keyed by our speaker number (`numbers`: raw id ->
    number, daemon.transcript.raw_speaker_numbers)."""
    centers = _cluster_centers(results)
    if centers is None:
        return {}
    out: dict[int, tuple[float, ...]] = {}
    for raw, number in numbers.items():
        if 0 <= raw < len(centers):
            out[number] = tuple(round(float(x), 6) for x in centers[raw])
    return out


def _funasr_path(path: Path) -> str:
    """A model directory as FunASR must see it: absolute. FunASR looks a model string up
    in its hub aliases before it checks the file system, so a relative `cam++` (what
    `./cam++` becomes) would be taken for the hub model of that name."""
    return os.path.abspath(path)


# --------------------------------------------------------------------------- engine


@dataclass
class Engine:
    """A loaded FunASR pipeline. Load once per worker, transcribe many files."""

    model: Any  # funasr.AutoModel
    dirs: ModelDirs
    device: str
    batch_size_s: int
    load_seconds: float
    funasr_version: str
    models: tuple[ModelInfo, ...] = field(default_factory=tuple)
    speaker_batcher: Any = None  # daemon.engine.speaker_batching.SpeakerBatcher, None when off
    pipeline_hooks: Any = None  # daemon.engine.pipeline_hooks.PipelineHooks, None when off
    stage_reporter: StageReporter | None = None
    speaker_hooks: Any = None  # daemon.engine.speaker_turns.SpeakerHooks, None without one
    # spkd's speaker refinements (daemon.engine.speaker_refine), None when off
    # (`speakers.refine: false`, or no speaker model): FunASR's clusters as they are
    refine_settings: Any = None
    # a sentence is cut where its tokens pause longer (`output.max_pause_seconds`);
    # None: FunASR's sentences as they are
    max_pause_seconds: float | None = None
    # a sentence's start and end are moved inwards to its first and last 10 ms of speech
    # (daemon.engine.speaker_turns.trim_to_speech); False: FunASR's times as they are
    trim_to_speech: bool = False

    @property
    def speaker_batching(self) -> bool:
        return self.speaker_batcher is not None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(funasr_version=self.funasr_version, device=self.device, models=self.models)

    @property
    def has_speakers(self) -> bool:
        return self.dirs.spk is not None

    @classmethod
    def load(
        cls,
        dirs: ModelDirs,
        *,
        device: str = "cpu",
        batch_size_s: int = 300,
        ncpu: int | None = None,
        speaker_batching: bool = True,
        pipeline_hooks: bool = True,
        refine: bool = True,
        refine_overrides: Mapping[str, float | None] | None = None,
        max_pause_seconds: float | None = OutputConfig.max_pause_seconds,
    ) -> "Engine":
        """Load VAD + ASR + punctuation (+ speaker model unless dirs.spk is None) once.

        `speaker_batching` runs the speaker model over all of a job's windows in large
        batches (daemon.engine.speaker_batching; identical results); it falls back to FunASR's
        own per-window loop, with a warning, on an untested FunASR version.
        `pipeline_hooks` moves FunASR's frame-by-frame reads of device tensors to the
        host and runs its clusterer on one thread (daemon.engine.pipeline_hooks; identical
        results; same fallback).
        `refine` (default) refines FunASR's speaker clusters with the speaker model's
        thresholds (daemon.engine.speaker_refine; `refine_overrides`: configured
        `speakers.*` values, None for the model's default), cuts sentences at pauses
        longer than `max_pause_seconds` and moves their ends to the speech; `refine=False` gives FunASR's clusters and
        sentences exactly (sentences still cut where FunASR's own timeline changes speaker).

        Raises ModelsMissingError before touching funasr when a directory is missing
        (FunASR would otherwise try the hub), DeviceError when the device is unusable."""
        require_model_dirs(dirs)
        if shutil.which("ffmpeg") is None:
            raise ffmpeg_missing()  # fail the boot, not every job
        started = time.monotonic()
        with printed_to_log("funasr"):
            funasr = import_funasr()
        import torch
        from funasr import AutoModel

        threads = max(1, ncpu if ncpu is not None else torch.get_num_threads())
        kwargs: dict[str, Any] = {
            "model": _funasr_path(dirs.asr),
            "vad_model": _funasr_path(dirs.vad),
            "punc_model": _funasr_path(dirs.punc),
            "device": device,
            "ncpu": threads,  # FunASR's default of 4 would override OMP_NUM_THREADS
            "disable_update": True,
            "disable_pbar": True,
            "log_level": "WARNING",
        }
        if dirs.spk is not None:
            kwargs["spk_model"] = _funasr_path(dirs.spk)
        logger.info("loading FunASR {} models on {} ({} threads)", funasr.__version__, device, threads)
        try:
            with printed_to_log("funasr"):  # its version banner; anything else it prints is kept
                model = AutoModel(**kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(f"out of memory while loading models on {device}: {exc}") from exc
            if isinstance(exc, RuntimeError) and device != "cpu":
                # CUDA/MPS/XPU initialisation failures surface as RuntimeError
                raise DeviceError(f"cannot load models on {device}: {exc}") from exc
            raise
        actual = str(model.kwargs.get("device", device))
        if device != "cpu" and actual == "cpu":
            # FunASR silently falls back to CPU for an unavailable device; the worker
            # must know, so that the fallback is deliberate and recorded.
            raise DeviceError(f"device {device} is not available (FunASR fell back to {actual})")
        guard_empty_batches(model.model)
        batcher = None
        if speaker_batching and dirs.spk is not None:
            from daemon.engine import speaker_batching as sb

            batcher = sb.install(model, str(funasr.__version__), actual)
        from daemon.engine import pipeline_hooks as ph

        hooks = ph.install(model, str(funasr.__version__), actual) if pipeline_hooks else None
        ph.release_load_memory()  # the loader's freed copies of the weights
        speaker_hooks = refine_settings = None
        if dirs.spk is not None:
            from daemon.engine import speaker_refine, speaker_turns

            speaker_hooks = speaker_turns.install(str(funasr.__version__))
            if refine and speaker_hooks is not None:
                refine_settings = speaker_refine.settings_for(read_model_meta(dirs.spk), refine_overrides or {})
                logger.info("speaker refinement: {}", ", ".join(f"{k} {v:g}"
                                                               for k, v in refine_settings.as_dict().items()))
        reporter = StageReporter(model)  # last: it wraps whatever the hooks above put there

        infos = []
        for role, path in dirs.items():
            meta = read_model_meta(path)
            infos.append(ModelInfo(role=role, name=path.name, revision=meta.get("revision"), path=str(path)))
        engine = cls(
            model=model,
            dirs=dirs,
            device=device,
            batch_size_s=int(batch_size_s),
            load_seconds=round(time.monotonic() - started, 3),
            funasr_version=str(funasr.__version__),
            models=tuple(infos),
            speaker_batcher=batcher,
            pipeline_hooks=hooks,
            stage_reporter=reporter,
            speaker_hooks=speaker_hooks,
            refine_settings=refine_settings,
            max_pause_seconds=max_pause_seconds if refine else None,
            trim_to_speech=refine,
        )
        logger.info("models loaded in {:.1f} s{}", engine.load_seconds,
                    f" (speaker batches of {batcher.batch_size})" if batcher else "")
        return engine

    def transcribe(
        self,
        audio_path: Path,
        *,
        speakers: int | None = None,
        hotwords: Sequence[str] = (),
        source_name: str | None = None,
        progress: ProgressCallback | None = None,
        channels: str | Sequence[str] = "mix",
    ) -> Transcript:
        """Transcribe one file. `speakers` fixes the speaker count for clustering;
        `hotwords` bias SeACo's recognition; `progress` hears each stage (decoding,
        vad, asr with its fraction, punctuation, speakers); `channels`
        (daemon.options.CHANNEL_MODES or a list of names) whether each channel is one
        speaker. Silence gives zero segments.
        Raises AudioError / OptionsError (permanent) or OutOfMemoryError (retry
        with a smaller batch_size_s)."""
        audio_path = Path(audio_path)
        started = time.monotonic()
        cfg: dict[str, Any] = {"batch_size_s": max(1, int(self.batch_size_s))}
        if speakers is not None:
            count = check_speakers(speakers, source=source_name or audio_path.name)
            if self.has_speakers:
                cfg["preset_spk_num"] = count  # FunASR's per-call oracle speaker count
            else:
                logger.warning("speaker count {} ignored: no speaker model loaded", count)
        words = hotword_words(hotwords)
        if words:
            # The surrounding spaces matter: FunASR downloads a hotword string that starts
            # with "http", reads one naming an existing .txt file, and silently drops
            # one that ends in ".txt"; it strips and splits the string itself.
            cfg["hotword"] = " " + " ".join(words) + " "
        if self.has_speakers:
            # FunASR keeps each cluster's mean embedding (`spk_embedding_center`, indexed
            # like the `spk` ids): the speaker's centroid, for the voice library.
            cfg["return_spk_center"] = True
        else:
            cfg["sentence_timestamp"] = True  # sentence_info without a speaker model

        if progress is not None:
            progress("decoding", None)
        names: dict[int, str] = {}
        if channels == "mix":
            samples = decode_audio(audio_path)
        else:
            samples = decode_audio(audio_path, keep_channels=True)
            split, names = self._channel_plan(samples, channels, audio_path.name)
            if split:
                return self._transcribe_channels(samples, cfg, names, audio_path, source_name, started)
            samples = samples.mean(axis=0)  # what ffmpeg's own down-mix gives, within rounding
        duration = samples.size / SAMPLE_RATE
        # a hint means exactly N: FunASR's k-means gives N, and nothing is refined after it
        refine = self.refine_settings if speakers is None else None
        recording = self.speaker_hooks.job(refine) if self.speaker_hooks else contextlib.nullcontext([])
        reporting = (self.stage_reporter.job(progress) if progress is not None and self.stage_reporter is not None
                     else contextlib.nullcontext())
        with recording as timelines, reporting:
            results = self.generate(samples, cfg)
        # one timeline per input, in order, when FunASR clustered (>= 1 window)
        timeline = timelines[0] if len(timelines) == 1 else None

        rows: list[tuple[float, float, int | None, str]] = []
        for result in results or []:
            rows.extend(rows_from_result(result, duration, self.has_speakers, timeline, self.max_pause_seconds))
        rows = self._at_speech(rows, samples)
        segments = number_speakers(rows)
        centroids = _speaker_centroids(results, raw_speaker_numbers(rows)) if self.has_speakers else {}
        elapsed = time.monotonic() - started
        logger.debug(
            "{}: {:.1f} s audio, {} segments, {} speakers, {:.2f} s",
            audio_path.name, duration, len(segments), len({s.speaker for s in segments}), elapsed,
        )
        return self._transcript(segments, duration, audio_path, source_name, elapsed).replace(
            speaker_centroids=centroids)

    def embed_voice(self, audio_path: Path, *, source_name: str | None = None) -> VoicePrint:
        """The voice of a recording of one person: FunASR's own pipeline with the speaker
        count fixed at one, so the one cluster's centroid is the mean CAM++ embedding of
        all its speech windows (what a transcription keeps per speaker, so the two
        compare). Raises EnrolmentError without a speaker model or without speech."""
        name = source_name or Path(audio_path).name
        if not self.has_speakers:
            raise EnrolmentError(f"{name}: no speaker model is configured (models.spk is null): voices need one")
        samples = decode_audio(Path(audio_path))
        cfg = {"batch_size_s": max(1, int(self.batch_size_s)), "preset_spk_num": 1, "return_spk_center": True}
        reporting = (self.stage_reporter.job(lambda _stage, _fraction: None) if self.stage_reporter is not None
                     else contextlib.nullcontext())
        with reporting:
            results = self.generate(samples, cfg)
            speech = self.stage_reporter.speech_seconds() if self.stage_reporter is not None else 0.0
        centers = _cluster_centers(results)
        if centers is None or len(centers) == 0:
            raise EnrolmentError(f"{name}: no speech found to take a voice from")
        model = self.info.speaker_model
        return VoicePrint(embedding=tuple(float(x) for x in centers[0]), speech_seconds=round(speech, 3),
                          audio_seconds=round(samples.size / SAMPLE_RATE, 3),
                          model_name=model.name if model else "", model_revision=model.revision if model else None)

    def _transcript(self, segments: tuple[Segment, ...], duration: float, audio_path: Path,
                    source_name: str | None, elapsed: float, names: dict[int, str] | None = None) -> Transcript:
        return Transcript(
            segments=segments,
            audio_seconds=round(duration, 3),
            source=describe_source(audio_path, name=source_name or audio_path.name,
                                   duration_seconds=round(duration, 3)),
            engine=self.info,
            timing=Timing(load_seconds=self.load_seconds, transcribe_seconds=round(elapsed, 3)),
            speaker_names=dict(names or {}),
        )

    def _channel_plan(self, samples: "np.ndarray", channels: str | Sequence[str],
                      name: str) -> tuple[bool, dict[int, str]]:
        """(split by channel?, speaker names) for decoded `[channels, samples]`; raises
        OptionsError when the setting cannot apply to this recording."""
        from daemon.options import check_channels, splits_channels

        check_channels(channels, samples.shape[0], source=name)
        names = {} if isinstance(channels, str) else {i + 1: n for i, n in enumerate(channels)}
        if splits_channels(channels):
            return True, names
        separation = channel_separation(samples)
        split = samples.shape[0] > 1 and separation >= AUTO_SPLIT_SHARE
        logger.info("{}: channels auto: {} channel(s), {:.0%} of speech frames >= {:g} dB apart: {}", name,
                    samples.shape[0], separation, AUTO_LEVEL_DIFFERENCE_DB, "split" if split else "mixed")
        return split, names

    def _transcribe_channels(self, samples: "np.ndarray", cfg: dict[str, Any], names: dict[int, str],
                             audio_path: Path, source_name: str | None, started: float) -> Transcript:
        """Each channel on its own (VAD, ASR, punctuation; no speaker model, no clustering),
        channel i as speaker i, all sentences on one timeline in time order. Overlapping
        speech on two channels stays two segments."""
        cfg = {k: v for k, v in cfg.items() if k != "preset_spk_num"}
        cfg["sentence_timestamp"] = True  # sentence_info without the speaker model
        duration = samples.shape[1] / SAMPLE_RATE
        rows: list[tuple[float, float, int | None, str]] = []
        with self._speaker_model_detached():
            for index, channel in enumerate(samples):
                results = self.generate(channel.copy(), dict(cfg))
                rows.extend(self._at_speech(_channel_rows(results, duration, index + 1, self.max_pause_seconds),
                                            channel))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        segments = tuple(Segment(start=round(s, 3), end=round(e, 3), speaker=int(k or 1), text=t.strip())
                         for s, e, k, t in rows)
        elapsed = time.monotonic() - started
        logger.debug("{}: {:.1f} s audio, {} channels split, {} segments, {:.2f} s", audio_path.name, duration,
                     samples.shape[0], len(segments), elapsed)
        return self._transcript(segments, duration, audio_path, source_name, elapsed, names)

    def _at_speech(self, rows: list[tuple[float, float, int | None, str]],
                   samples: "np.ndarray") -> list[tuple[float, float, int | None, str]]:
        """`rows` with their ends moved to the speech of `samples` (mono), when that is on."""
        if not self.trim_to_speech:
            return rows
        from daemon.engine.speaker_turns import frame_levels, trim_to_speech

        return trim_to_speech(rows, frame_levels(samples, SAMPLE_RATE))

    @contextlib.contextmanager
    def _speaker_model_detached(self) -> Any:
        """FunASR's pipeline without its speaker stage (it skips CAM++ and clustering when
        AutoModel.spk_model is None), for channels that are speakers already."""
        saved = getattr(self.model, "spk_model", None)
        self.model.spk_model = None
        try:
            yield
        finally:
            self.model.spk_model = saved

    def generate(self, samples: "np.ndarray", cfg: dict[str, Any]) -> list[dict[str, Any]]:
        """FunASR's `AutoModel.generate` on decoded samples (the raw result dicts),
        with the speaker stage batched when speaker batching is on."""
        scope = self.speaker_batcher.job() if self.speaker_batcher is not None else contextlib.nullcontext()
        try:
            with scope:
                return self.model.generate(input=samples, **cfg)
        except Exception as exc:
            if is_out_of_memory(exc):
                import gc

                gc.collect()  # after an OOM it is worth 200 ms: free the failed batch's tensors now
                self.release()
                raise OutOfMemoryError(
                    f"out of memory on {self.device} at batch_size_s={self.batch_size_s}: {exc}"
                ) from exc
            raise

    def release(self) -> None:
        """Give cached device memory back between jobs (the models stay loaded).

        No full `gc.collect()` here: with FunASR and torch loaded it costs 200-250 ms a
        job (bench/sizes: 4.6 % of a 30-s recording's inference), and the job's tensors
        are freed by reference counting anyway (RSS stayed flat over 200 jobs)."""
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a hard dependency
            return
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if self.device.startswith("mps") and mps is not None and hasattr(mps, "empty_cache"):
            mps.empty_cache()
        xpu = getattr(torch, "xpu", None)
        if self.device.startswith("xpu") and xpu is not None and hasattr(xpu, "empty_cache"):
            xpu.empty_cache()



# --------------------------------------------------------------------------- callers
# What the worker and `spkd transcribe` share: loading the engine a config describes,
# and out-of-memory retries.

# Halvings of batch_size_s after an out-of-memory before the error goes to the caller
# (the worker then runs the job on its slot's fallback device).
OOM_RETRIES = 2


class Transcriber(Protocol):
    """What the callers need of an engine: `Engine`, or the fake engine in tests/."""

    batch_size_s: int

    def transcribe(self, audio_path: Path, *, speakers: int | None = None, hotwords: Sequence[str] = (),
                   source_name: str | None = None, progress: ProgressCallback | None = None,
                   channels: str | Sequence[str] = "mix") -> Transcript: ...

    def embed_voice(self, audio_path: Path, *, source_name: str | None = None) -> VoicePrint: ...

    def release(self) -> None: ...


def load_configured(config: "Config", device: str, *, threads: int | None = None) -> Engine:
    """The engine of the config's `models` section on `device`, a slot's device name
    (`cuda:1`, `cpu`) whose environment (daemon.service.devices.worker_env) is already set.
    Threads: OMP_NUM_THREADS of that environment, else `threads`."""
    m = config.models
    dirs = require_model_dirs(configured_model_dirs(m))
    return Engine.load(dirs, device=torch_device(device), batch_size_s=m.batch_size_s,
                       ncpu=int(os.environ.get("OMP_NUM_THREADS", "0")) or threads,
                       speaker_batching=m.speaker_batching, refine=config.speakers.refine,
                       refine_overrides=config.speakers.refine_overrides(),
                       max_pause_seconds=config.output.max_pause_seconds)


def transcribe_with_retries(engine: Transcriber, audio_path: Path, options: Mapping[str, Any], *,
                            source_name: str, on_retry: Callable[[int], None] | None = None,
                            progress: ProgressCallback | None = None) -> Transcript:
    """`engine.transcribe` with a job's options (`speakers`, `hotwords`, `channels`). Out of memory:
    halve `engine.batch_size_s` and try again, OOM_RETRIES times at most and never below
    1, calling `on_retry(new batch_size_s)` before each; then OutOfMemoryError goes up."""
    for attempt in range(OOM_RETRIES + 1):
        try:
            return engine.transcribe(Path(audio_path), speakers=options.get("speakers"),
                                     hotwords=tuple(options.get("hotwords") or ()), source_name=source_name,
                                     progress=progress, channels=options.get("channels", "mix"))
        except OutOfMemoryError:
            if attempt == OOM_RETRIES or engine.batch_size_s <= 1:
                raise
            engine.batch_size_s = max(1, engine.batch_size_s // 2)
            engine.release()
            if on_retry is not None:
                on_retry(engine.batch_size_s)
    raise AssertionError("unreachable")  # pragma: no cover
