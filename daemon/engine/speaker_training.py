"""Train the tiny CAM++ at build time so that FunASR's own diarization separates voices.

A randomly initialised CAM++ gives every voice nearly the same embedding, so FunASR's
clustering (ClusterBackend: spectral clustering, then merging clusters whose centroids
have cosine >= 0.78) finds one speaker. This module trains FunASR's own `CAMPPlus`, at
small dimensions, on speech synthesised by espeak-ng, on exactly the inputs FunASR's
pipeline feeds it (`AutoModel.inference_with_vad` in FunASR 1.4.16):

- each VAD segment is cut by `funasr.models.campplus.utils.sv_chunk` into 1.5-s windows
  with a 0.75-s shift (the last one aligned to the segment end, a segment shorter than
  1.5 s zero padded);
- each window becomes 80-bin Kaldi fbank features with the window's mean subtracted,
  by `funasr.models.campplus.utils.extract_feature`.

Both functions are called here, not re-implemented, so the features are the pipeline's.

What is trained, and how: the model's 2-D convolutional front end (`head`, FCM, fixed at
32 channels by FunASR whatever the other dimensions) costs ~90 % of a forward pass on a
CPU, so it keeps its seeded random weights (first filters made to sum to zero, so a
window's share of silence does not shift them) with its batch-norm statistics
re-estimated on the training speech, and its outputs are computed once. Everything
after it is *fitted in closed form* to the training voices rather than by gradient
steps (on two cores one SGD step over CAM++ costs seconds, and a few hundred of them
overfit ~50 voices): the TDNN becomes a regularised frame-level linear discriminant
(Fisher LDA) of the front end's output, the three CAM dense blocks pass its channels
on, and the embedding layer becomes a discriminant of the pooled mean and standard
deviation (`train_campplus`, `fit_after_front_end`). The criterion is the Fisher ratio
(between-voice over within-voice variance) at both levels; `TrainingReport` records
them and the nearest-centroid accuracy on the training windows, and `spkd-training.json`
beside the weights keeps the report.

Voices: only the espeak-ng variants named in `is_training_voice`; every other variant
(the base voice, f1 f3 f5 m1 m3 m5-m8, named variants from M to Z) is held out, and every
attribution test and benchmark uses held-out voices only (`held_out_voices`).

Deterministic: fixed seeds and a fixed number of torch threads while training; the same
espeak-ng and torch give the same weights.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import re
import shutil
import subprocess
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

SAMPLE_RATE = 16000
# The phases of `train_campplus`, in order, as its `progress` callback names them with
# what it has done of each (speech: utterances synthesised; features: training windows
# through the front end; fitting: not counted).
TRAINING_PHASES = ("speech", "features", "fitting")
TrainingProgress = Callable[[str, "int | None", "int | None"], None]
TRAINING_NUMBERED = ("f2", "f4", "m2", "m4")
_NUMBERED = re.compile(r"^[fm]\d+$")

# Everyday Mandarin phrases (users are mostly Mandarin speakers); an utterance joins a
# few of them. A little English so that an English recording is not out of domain.
MANDARIN_PHRASES = (
    "今天的会议我们主要讨论下个月的计划",
    "请大家先看一下屏幕上的数字",
    "这个问题我们上周已经说过了",
    "我觉得这个方案还需要再改一改",
    "客户那边希望我们周五之前给答复",
    "明天早上九点在三楼会议室见",
    "最近天气变冷了大家注意身体",
    "这次的测试结果比上次好很多",
    "我们可以先把预算表发给财务",
    "你能不能再解释一下刚才那一点",
    "新系统上线以后速度快了一倍",
    "我同意你的看法但是时间太紧了",
    "下午我要去医院看一下我妈妈",
    "这家饭馆的面条非常好吃",
    "火车站离这里大概有三公里",
    "周末我们一起去爬山怎么样",
    "孩子们下个星期就要放假了",
    "麻烦你把门关上谢谢",
    "电话那头的声音有点听不清楚",
    "我们公司明年打算招二十个人",
    "这份合同还有几个地方要修改",
    "昨天晚上的比赛你看了没有",
    "请把你的意见写在表格里",
    "我的手机快没电了",
    "服务器昨天半夜重启了一次",
    "这个价格已经是最低的了",
    "春节的时候我们回老家过年",
    "他说话的速度总是特别快",
    "图书馆周一到周五都开门",
    "先喝杯茶休息一下再继续",
    "数据备份每天凌晨自动完成",
    "请问您需要什么帮助",
    "您的订单已经发货了",
    "我再确认一下您的地址",
    "好的没问题我马上处理",
    "对不起让您久等了",
)
ENGLISH_PHRASES = (
    "thank you for calling, how can I help you today",
    "the meeting starts at nine in the main room",
    "could you send me the report before Friday",
    "we moved the servers to the new data centre",
    "I think we should wait until next week",
    "please repeat the last number for me",
)


@dataclass(frozen=True)
class TrainingRecipe:
    """Everything that decides the trained weights (with the seed and espeak-ng)."""

    # Each training variant speaks at these espeak-ng pitches (None: its own), each
    # (variant, pitch) one speaker. Its own pitch only: adding 25 and 75 (150 speakers)
    # took 35 % longer and did not separate held-out voices any better.
    pitches: tuple[int | None, ...] = (None,)
    utterances_per_speaker: int = 8
    windows_per_speaker: int = 30  # a random choice among the speaker's windows
    english_share: float = 0.15
    short_share: float = 0.15  # utterances cut to 0.6-1.4 s: zero-padded windows, as short turns give
    phrases_per_utterance: tuple[int, int] = (1, 2)
    # espeak-ng's Mandarin is slow at its default 175: 220-320 gives 3-4.5 characters
    # a second, as people speak; English keeps its usual range
    mandarin_words_per_minute: tuple[int, int] = (220, 320)
    english_words_per_minute: tuple[int, int] = (140, 200)
    vad_margin_seconds: tuple[float, float] = (0.1, 0.3)  # FSMN-VAD keeps ~0.2 s before, 0.1 s after
    level_invariant_front_end: bool = True
    frame_regularisation: float = 0.01  # ridge on the within-voice scatter, share of its mean variance
    segment_regularisation: float = 0.3
    threads: int = 2
    bn_calibration_windows: int = 512


@dataclass
class TrainingReport:
    voices: list[str]
    utterances: int
    speech_seconds: float
    windows: int
    frame_fisher_ratio: float  # between/within-voice variance captured by the frame projection
    segment_fisher_ratio: float  # the same for the embedding
    training_accuracy: float  # windows whose nearest voice centroid (cosine) is their own voice
    seconds: float
    recipe: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- voices


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """The variant names `-v LANG+NAME` accepts (the File column of
    `espeak-ng --voices=variant`, without its `!v/` prefix)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    names = []
    for line in out.stdout.splitlines()[1:]:
        cols = line.split()
        files = [c for c in cols if c.startswith("!v/")]
        if files:
            names.append(files[0][3:])
    return tuple(names)


def is_training_voice(variant: str) -> bool:
    """Named variants of three letters or more beginning A-L (any case), and f2 f4 m2 m4."""
    if _NUMBERED.match(variant):
        return variant in TRAINING_NUMBERED
    return len(variant) >= 3 and variant[0].lower() in "abcdefghijkl"


def training_voices() -> list[str]:
    return [v for v in espeak_variants() if is_training_voice(v)]


def held_out_voices() -> list[str]:
    """Every variant the tiny CAM++ never hears in training (the base voice, which has
    no variant name, is held out too)."""
    return [v for v in espeak_variants() if not is_training_voice(v)]


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


# --------------------------------------------------------------------------- speech


def synthesize(text: str, voice: str, *, words_per_minute: int = 175, pitch: int | None = None) -> np.ndarray:
    """One utterance from espeak-ng (`voice` as `-v` takes it, e.g. "cmn+m3"), as 16 kHz
    mono float32 with leading and trailing silence trimmed."""
    from scipy.signal import resample_poly

    cmd = ["espeak-ng", "-v", voice, "-s", str(int(words_per_minute)), "--stdout"]
    if pitch is not None:
        cmd += ["-p", str(int(pitch))]
    proc = subprocess.run([*cmd, text], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng -v {voice} failed: {proc.stderr.decode(errors='replace')[-300:]}")
    # espeak-ng streams its WAV, so the header's sizes are placeholders: read the
    # format from the header and take everything after it as 16-bit samples
    with wave.open(io.BytesIO(proc.stdout)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    if width != 2 or channels != 1:
        raise RuntimeError(f"espeak-ng wrote {channels} channels of {8 * width} bits")
    pcm = np.frombuffer(proc.stdout[44:], dtype="<i2").astype(np.float32) / 32768.0
    g = math.gcd(SAMPLE_RATE, rate)
    audio = resample_poly(pcm, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return trim_silence(audio)


def trim_silence(audio: np.ndarray, *, threshold: float = 0.005, frame: int = 160) -> np.ndarray:
    """Cut leading and trailing 10-ms frames whose peak is below `threshold`."""
    n = audio.size // frame
    if n == 0:
        return audio
    peaks = np.abs(audio[: n * frame]).reshape(n, frame).max(axis=1)
    loud = np.flatnonzero(peaks >= threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * frame : (loud[-1] + 1) * frame].copy()


@dataclass(frozen=True)
class _Utterance:
    speaker: int  # index into the (variant, pitch) list
    voice: str  # variant
    pitch: int | None
    language: str
    text: str
    words_per_minute: int


def _plan_utterances(speakers: Sequence[tuple[str, int | None]], recipe: TrainingRecipe,
                     rng: random.Random) -> list[_Utterance]:
    plan = []
    for index, (voice, pitch) in enumerate(speakers):
        for _ in range(recipe.utterances_per_speaker):
            english = rng.random() < recipe.english_share
            phrases = ENGLISH_PHRASES if english else MANDARIN_PHRASES
            joiner = ", " if english else "，"
            k = rng.randint(*recipe.phrases_per_utterance)
            text = joiner.join(rng.sample(phrases, k))
            speed = recipe.english_words_per_minute if english else recipe.mandarin_words_per_minute
            plan.append(_Utterance(index, voice, pitch, "en" if english else "cmn", text, rng.randint(*speed)))
    return plan


def _speak(utt: _Utterance) -> np.ndarray:
    return synthesize(utt.text, f"{utt.language}+{utt.voice}", words_per_minute=utt.words_per_minute,
                      pitch=utt.pitch)


def speaker_windows(segment: np.ndarray) -> list[np.ndarray]:
    """The 1.5-s windows FunASR's pipeline cuts one VAD segment into (its own sv_chunk)."""
    from funasr.models.campplus.utils import sv_chunk

    return [w[2] for w in sv_chunk([[0.0, segment.size / SAMPLE_RATE, segment]])]


def window_features(windows: Sequence[np.ndarray]) -> Any:
    """[N, frames, 80] features of equal-length windows, as FunASR's CAM++ computes them."""
    import torch
    from funasr.models.campplus.utils import extract_feature

    feats, _lengths, _times = extract_feature([torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in windows])
    return feats


# --------------------------------------------------------------------------- training


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _calibrate_batch_norm(module: Any, inputs: Sequence[Any]) -> None:
    """Re-estimate a frozen module's batch-norm statistics on real inputs (cumulative
    averages), so that its random features are centred and scaled as at inference."""
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for x in inputs:
            module(x)
    for m in norms:
        m.momentum = 0.1
    module.eval()


def _pass_through_norm(norm: Any, mean: Any = None) -> None:
    """An eval-mode batch norm that only subtracts `mean` (zero by default)."""
    import torch

    with torch.no_grad():
        norm.running_mean.copy_(torch.zeros_like(norm.running_mean) if mean is None else mean)
        norm.running_var.fill_(1.0)
        if norm.affine:
            norm.weight.fill_(math.sqrt(1.0 + norm.eps))
            norm.bias.zero_()
        else:  # (x - mean) / sqrt(var + eps): make the divisor 1
            norm.running_var.fill_(1.0 - norm.eps)


def _discriminant(total_moment: np.ndarray, class_sums: np.ndarray, class_counts: np.ndarray,
                  dims: int, regularisation: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear discriminant analysis from sufficient statistics: (projection [D, dims],
    global mean, Fisher ratio of the kept directions). Within-voice scatter gets a ridge of
    `regularisation` times its mean variance."""
    from scipy.linalg import eigh

    n = class_counts.sum()
    mean = class_sums.sum(axis=0) / n
    class_means = class_sums / class_counts[:, None]
    within = (total_moment - (class_means * class_counts[:, None]).T @ class_means) / n
    centred = class_means - mean
    between = (centred * class_counts[:, None]).T @ centred / n
    ridge = regularisation * np.trace(within) / within.shape[0]
    values, vectors = eigh(between, within + ridge * np.eye(within.shape[0]))
    order = np.argsort(values)[::-1][:dims]
    projection = vectors[:, order]
    # a fixed sign per direction, so that equal inputs give equal weights everywhere
    projection *= np.sign(projection[np.abs(projection).argmax(axis=0), np.arange(dims)])
    return projection, mean, float(values[order].sum())


def _moments(x: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sums = np.zeros((classes, x.shape[1]))
    np.add.at(sums, labels, x)
    return x.T @ x, sums, np.bincount(labels, minlength=classes).astype(np.float64)


def _prepare_pass_through(model: Any) -> int:
    """Make every CAM dense layer add zeros and every transit pass its first channels on,
    so that the TDNN's channels reach the statistics pooling unchanged; returns their
    number. (DenseNet blocks concatenate their input with the layers' outputs, so only
    the transits, which halve the channels, could lose any.)"""
    import torch

    xvector = model.xvector
    channels = xvector.tdnn.linear.out_channels
    with torch.no_grad():
        for name, module in xvector.named_children():
            if name.startswith("block"):
                for layer in module:
                    layer.cam_layer.linear_local.weight.zero_()
                    if layer.cam_layer.linear_local.bias is not None:
                        layer.cam_layer.linear_local.bias.zero_()
            elif name.startswith("transit"):
                conv = module.linear
                if conv.out_channels < channels:
                    raise ValueError(
                        f"{name} keeps {conv.out_channels} channels, fewer than the {channels} of the TDNN: "
                        "raise growth_rate (each block must at least double its input)"
                    )
                _pass_through_norm(module.nonlinear.batchnorm)
                conv.weight.zero_()
                conv.weight[torch.arange(channels), torch.arange(channels), 0] = 1.0
        _pass_through_norm(xvector.out_nonlinear.batchnorm)
    return channels


def train_campplus(model: Any, *, seed: int, recipe: TrainingRecipe | None = None,
                   voices: Sequence[str] | None = None, progress: TrainingProgress | None = None) -> TrainingReport:
    """Fit `model` (a FunASR CAMPPlus, random from `seed`) to the training voices, in
    place, and leave it in eval mode; return what was done.

    Closed form, no gradient steps (on two CPU cores one SGD step over CAM++ costs
    seconds, and a few hundred of them overfit 50 voices): the random FCM front end keeps
    its weights with batch-norm statistics re-estimated on the speech; the TDNN becomes a
    frame-level linear discriminant of the front end's output (each direction twice, +
    and -, so that its ReLU keeps both halves); the dense blocks pass those channels on
    (`_prepare_pass_through`); the embedding layer becomes a discriminant of their
    pooled mean and standard deviation. Discriminants are fitted on the training voices'
    windows, regularised as the recipe says. `voices`: a subset of the training voices
    (default: all of them). `progress(phase, done, total)`: see TRAINING_PHASES."""
    import torch

    def say(phase: str, done: int | None = None, total: int | None = None) -> None:
        if progress is not None:
            progress(phase, done, total)

    recipe = recipe or TrainingRecipe()
    started = time.monotonic()
    voices = list(voices) if voices is not None else training_voices()
    if not all(is_training_voice(v) for v in voices):
        raise ValueError(f"not training voices: {[v for v in voices if not is_training_voice(v)]}")
    if len(voices) < 2:
        raise RuntimeError(f"espeak-ng lists too few training voices ({voices})")
    rng = random.Random(seed)
    speakers = [(v, p) for v in voices for p in recipe.pitches]
    plan = _plan_utterances(speakers, recipe, rng)
    speech: list[np.ndarray] = []
    say("speech", 0, len(plan))
    with ThreadPoolExecutor(max_workers=recipe.threads) as pool:
        for audio in pool.map(_speak, plan):  # in the plan's order, whatever finishes first
            speech.append(audio)
            say("speech", len(speech), len(plan))

    per_speaker: list[list[np.ndarray]] = [[] for _ in speakers]
    for utt, audio in zip(plan, speech):
        if rng.random() < recipe.short_share:
            audio = audio[: int(rng.uniform(0.6, 1.4) * SAMPLE_RATE)]
        if audio.size < SAMPLE_RATE // 4:
            continue
        # a VAD segment: the speech with the silence margins FSMN-VAD leaves around it
        lead = np.zeros(int(rng.uniform(*recipe.vad_margin_seconds) * SAMPLE_RATE), dtype=np.float32)
        tail = np.zeros(int(rng.uniform(*recipe.vad_margin_seconds) * SAMPLE_RATE), dtype=np.float32)
        per_speaker[utt.speaker].extend(speaker_windows(np.concatenate([lead, audio, tail])))
    windows: list[np.ndarray] = []
    labels_list: list[int] = []
    for index, mine in enumerate(per_speaker):
        for w in rng.sample(mine, min(len(mine), recipe.windows_per_speaker)):
            windows.append(w)
            labels_list.append(index)
    labels = np.asarray(labels_list)
    synth_seconds = time.monotonic() - started

    batch = 64
    say("features", 0, len(windows))
    with _torch_threads(recipe.threads), torch.no_grad():
        torch.manual_seed(seed)
        feats = torch.cat([window_features(windows[i : i + 256]) for i in range(0, len(windows), 256)])
        head = model.head
        if recipe.level_invariant_front_end:
            # FunASR subtracts each window's mean from its features, so the share of
            # silence in a window shifts every speech frame by one constant: first
            # filters that sum to zero do not see that shift
            head.conv1.weight -= head.conv1.weight.mean(dim=(2, 3), keepdim=True)
        calibration = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
        calibration = calibration[: recipe.bn_calibration_windows]
        _calibrate_batch_norm(head, [feats[calibration[i : i + batch]].permute(0, 2, 1)
                                     for i in range(0, len(calibration), batch)])
        pieces = []
        for i in range(0, len(windows), batch):
            pieces.append(head(feats[i : i + batch].permute(0, 2, 1)).to(torch.float16))
            say("features", min(i + batch, len(windows)), len(windows))
        outputs = torch.cat(pieces)
        del feats, pieces
        head_seconds = time.monotonic() - started - synth_seconds

        say("fitting")
        frame_fisher, segment_fisher = fit_after_front_end(model, outputs, labels, len(speakers), recipe)
        embeddings = torch.cat([model.xvector(outputs[i : i + batch].float()) for i in range(0, len(windows), batch)])
    accuracy = _nearest_centroid_accuracy(embeddings.numpy(), labels)

    report = TrainingReport(
        voices=voices,
        utterances=len(plan),
        speech_seconds=round(sum(a.size for a in speech) / SAMPLE_RATE, 1),
        windows=len(windows),
        frame_fisher_ratio=round(frame_fisher, 3),
        segment_fisher_ratio=round(segment_fisher, 3),
        training_accuracy=round(accuracy, 4),
        seconds=round(time.monotonic() - started, 1),
        recipe=asdict(recipe),
    )
    logger.info(
        "trained tiny CAM++ on {} voices, {} utterances ({:.0f} s speech, {} windows): nearest-centroid "
        "accuracy {:.3f} on the training windows, {:.0f} s (speech {:.0f} s, front end {:.0f} s)",
        len(voices), report.utterances, report.speech_seconds, report.windows, report.training_accuracy,
        report.seconds, synth_seconds, head_seconds,
    )
    return report


def fit_after_front_end(model: Any, outputs: Any, labels: np.ndarray, classes: int,
                        recipe: TrainingRecipe) -> tuple[float, float]:
    """Set everything after the front end from its outputs `[N, C, T]` on the training
    windows (see `train_campplus`); returns the two Fisher ratios."""
    import torch

    xvector = model.xvector
    tdnn = xvector.tdnn
    conv = tdnn.linear
    stride = conv.stride[0]
    centre = conv.kernel_size[0] // 2
    if conv.padding[0] != centre * conv.dilation[0]:
        raise ValueError("the TDNN must be centred (padding = kernel // 2 * dilation)")
    frame_dims = conv.out_channels // 2
    batch = 64
    with torch.no_grad():
        # 1. the TDNN: a discriminant of the front-end frames its kernel centre sees
        frames = outputs[:, :, ::stride].float()  # [N, C, T]: output frame t is centred on input 2t
        frame_labels = np.repeat(labels, frames.shape[2])
        flat = frames.permute(0, 2, 1).reshape(-1, frames.shape[1]).double().numpy()
        projection, frame_mean, frame_fisher = _discriminant(
            *_moments(flat, frame_labels, classes), frame_dims, recipe.frame_regularisation
        )
        del flat, frames
        p = torch.from_numpy(projection.T.copy()).float()  # [dims, C]
        offset = p @ torch.from_numpy(frame_mean).float()
        conv.weight.zero_()
        conv.weight[:, :, centre] = torch.cat([p, -p])
        if conv.bias is not None:
            conv.bias.zero_()
        _pass_through_norm(tdnn.nonlinear.batchnorm, torch.cat([offset, -offset]))
        _prepare_pass_through(model)

        # 2. the embedding: a discriminant of the pooled statistics
        dense = xvector.dense
        pooled = torch.nn.Sequential(*[m for name, m in xvector.named_children() if name != "dense"]).eval()
        stats = torch.cat([pooled(outputs[i : i + batch].float()) for i in range(0, len(outputs), batch)])
        used = stats.abs().amax(dim=0) > 0  # the channels the blocks added are all zero
        stats_used = stats[:, used].double().numpy()
        embedding_dims = dense.linear.out_channels
        projection2, stats_mean, segment_fisher = _discriminant(
            *_moments(stats_used, labels, classes), embedding_dims, recipe.segment_regularisation
        )
        weight = torch.zeros_like(dense.linear.weight)  # [E, S, 1]
        weight[:, used, 0] = torch.from_numpy(projection2.T.copy()).float()
        dense.linear.weight.copy_(weight)
        if dense.linear.bias is not None:
            dense.linear.bias.zero_()
        embedded_mean = torch.from_numpy(stats_mean @ projection2).float()
        _pass_through_norm(dense.nonlinear.batchnorm, embedded_mean)
        model.eval()

    return frame_fisher, segment_fisher


REPORT_FILE = "spkd-training.json"


def write_report(directory: Path, report: TrainingReport) -> None:
    """How the weights in `directory` were trained, beside them."""
    import json

    (Path(directory) / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")


def read_report(directory: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((Path(directory) / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _nearest_centroid_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    classes = np.unique(labels)
    centroids = np.stack([unit[labels == c].mean(axis=0) for c in classes])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return float((classes[(unit @ centroids.T).argmax(axis=1)] == labels).mean())


__all__ = [
    "REPORT_FILE",
    "TRAINING_PHASES",
    "TrainingProgress",
    "ENGLISH_PHRASES",
    "MANDARIN_PHRASES",
    "SAMPLE_RATE",
    "TRAINING_NUMBERED",
    "TrainingRecipe",
    "TrainingReport",
    "espeak_available",
    "espeak_variants",
    "espeak_version",
    "fit_after_front_end",
    "held_out_voices",
    "is_training_voice",
    "read_report",
    "speaker_windows",
    "synthesize",
    "train_campplus",
    "training_voices",
    "trim_silence",
    "window_features",
    "write_report",
]
