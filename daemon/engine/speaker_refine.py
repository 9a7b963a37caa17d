"""Who said it, counted right: refine FunASR's speaker clusters before they become turns.

FunASR 1.4.16 cuts the speech into 1.5-s windows (0.75-s shift), embeds each with CAM++
and clusters the embeddings (`ClusterBackend`): spectral clustering with an eigengap
count below 2048 windows, UMAP + HDBSCAN above (about 26 minutes of speech), then merges
clusters whose centroids reach cosine 0.78. Measured on dialogs and meetings of voices the
speaker model never heard (`python -m bench diarization`), the count it gives is often
wrong the same ways users report (FunASR #1623, #2114): one or two windows of a voice
become a speaker of their own (a turn's padded tail, a cough), a voice is split in two
whose halves sit closer to each other than to anyone else, and HDBSCAN leaves a cluster
of leftovers from every voice.

3D-Speaker (the maintained successor of FunASR's speaker stack) and pyannote both go
past the clusterer here; so does this module, on both paths, after FunASR's clustering
and before its `postprocess` turns the labels into a timeline:

1. **Too little to be a person.** A cluster with less talk than `min_speaker_seconds`
   (its windows' time, overlaps counted once) is dissolved.
2. **Not clearly another voice.** Every other cluster but the one with the most talk is
   tested, the least talk first, against the clusters with more talk: for each of its
   windows, how much nearer it is to its own cluster's centroid (without that window)
   than to the nearest larger cluster's. When the median of that lead is below
   `distinct_margin`, the cluster is not a voice of its own (a split-off piece of one
   voice, or a mixture of leftovers) and is dissolved. The test is relative to the
   recording's own clusters, so it holds for a person who says two short sentences in
   a clearly different voice, and it does not hinge on one cosine between centroids
   (on the tiny test model a split voice's halves and two different voices overlap).
3. **Close centroids.** Clusters whose centroids reach `merge_cosine` are merged, the
   closest pair first (3D-Speaker's `mer_cos`).

A dissolved cluster's windows go one by one to the nearest remaining centroid: a
mixture of leftovers is shared out among the voices it came from.

Thresholds belong to a speaker model (`defaults_for`): the tiny test CAM++ is far weaker
than the real one. The refinement is skipped when the job fixes the speaker count (a
hint means exactly N: FunASR's k-means gives N) and with `speakers.refine: false`.

Pure numpy; used only by the engine (daemon.engine.pipeline_hooks installs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

WINDOW_SHIFT_SECONDS = 0.75  # FunASR's sv_chunk: 1.5-s windows every 0.75 s


@dataclass(frozen=True)
class RefineSettings:
    """The thresholds of one speaker model (see the module docstring)."""

    min_speaker_seconds: float
    transition_share: float
    distinct_margin: float
    merge_cosine: float

    def as_dict(self) -> dict[str, float]:
        return {"min_speaker_seconds": self.min_speaker_seconds, "transition_share": self.transition_share,
                "distinct_margin": self.distinct_margin, "merge_cosine": self.merge_cosine}


# The real CAM++ (iic/speech_campplus_sv_zh-cn_16k-common): the merge cosine is
# 3D-Speaker's published diarization configuration for this model (speakerlab
# CommonClustering, mer_cos 0.8); not measured here (no real multi-speaker recordings).
# The rest are the tiny model's: 3D-Speaker's min_cluster_size of 4 windows would drop a
# person who says two short sentences (two windows), and the tiny model, whose voices are
# harder to tell apart, errs towards keeping a small cluster.
REAL_CAMPP = RefineSettings(min_speaker_seconds=2.2, transition_share=0.8, distinct_margin=0.15, merge_cosine=0.8)
# The tiny test CAM++ (`spkd models make-tiny`), measured on held-out voices by
# `python -m bench diarization` (BENCHMARKS.md).
TINY_CAMPP = RefineSettings(min_speaker_seconds=2.2, transition_share=0.8, distinct_margin=0.15, merge_cosine=0.68)


def defaults_for(meta: Mapping[str, Any]) -> RefineSettings:
    """The default thresholds of the speaker model described by `meta`
    (daemon.engine.models.read_model_meta): the tiny test model's, or the real CAM++'s
    (also for any other model, until one is measured)."""
    return TINY_CAMPP if meta.get("tiny") else REAL_CAMPP


def settings_for(meta: Mapping[str, Any], overrides: Mapping[str, float | None]) -> RefineSettings:
    """The model's defaults with the configured `speakers.*` values (None: the default)."""
    given = {k: float(v) for k, v in overrides.items() if v is not None}
    return replace(defaults_for(meta), **given)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _talk_seconds(times: np.ndarray) -> float:
    """The time covered by windows [start, end] (overlaps once)."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(map(tuple, times)):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _leave_one_out_lead(own: np.ndarray, others: np.ndarray) -> float:
    """Median over a cluster's windows (unit rows of `own`) of how much nearer each is to
    the cluster's centroid without it than to the nearest of `others` (unit centroids)."""
    total = own.sum(axis=0)
    rest = _unit(total[None, :] - own)  # each window's cluster centroid without it
    to_own = np.einsum("ij,ij->i", own, rest)
    to_others = (own @ others.T).max(axis=1)
    return float(np.median(to_own - to_others))


def refine_labels(labels: Any, embeddings: Any, times: Any, settings: RefineSettings) -> np.ndarray:
    """FunASR's cluster labels (one per window) refined as the module docstring says,
    numbered 0..k-1 by first appearance. `times`: each window's [start, end] seconds
    (None: every window counts WINDOW_SHIFT_SECONDS)."""
    labels = np.asarray(labels).astype(int).copy()
    x = _unit(np.asarray(embeddings, dtype=np.float64))
    spans = None if times is None else np.asarray(times, dtype=np.float64).reshape(-1, 2)
    if labels.size == 0:
        return labels
    order = joined = None
    if spans is not None and spans.shape[0] == labels.size:
        order = np.argsort(spans[:, 0], kind="stable")
        joined = spans[order[1:], 0] < spans[order[:-1], 1] - 1e-6  # consecutive windows of one segment

    def talk(k: int) -> float:
        if spans is None:
            return WINDOW_SHIFT_SECONDS * float((labels == k).sum())
        return _talk_seconds(spans[labels == k])

    def centroid(k: int) -> np.ndarray:
        return _unit(x[labels == k].mean(axis=0))

    def contact_share(k: int) -> float:
        # windows of k that overlap (the same VAD segment) a neighbouring window of
        # another cluster, as a share of k's windows
        if order is None:
            return 0.0
        ours = labels[order] == k
        other = labels[order[1:]] != labels[order[:-1]]
        touching = np.zeros(order.size, dtype=bool)
        edge = joined & other
        touching[:-1] |= edge
        touching[1:] |= edge
        return float((touching & ours).sum() / max(1, ours.sum()))

    def dissolve(k: int) -> None:
        keep = [j for j in np.unique(labels) if j != k]
        if not keep:
            return
        centres = np.stack([centroid(j) for j in keep])
        mine = np.where(labels == k)[0]
        labels[mine] = np.asarray(keep)[(x[mine] @ centres.T).argmax(axis=1)]

    # 1. too little to be a person (least talk first; the largest cluster always stays)
    while True:
        clusters = sorted(np.unique(labels), key=talk)
        small = [k for k in clusters[:-1] if talk(k) < settings.min_speaker_seconds]
        if not small:
            break
        dissolve(small[0])
    # 2. not clearly another voice, tested against the clusters with more talk
    tested: set[int] = set()
    while True:
        clusters = sorted(np.unique(labels), key=talk)
        candidates = [k for k in clusters[:-1] if k not in tested]
        if not candidates:
            break
        k = candidates[0]
        tested.add(k)
        larger = clusters[clusters.index(k) + 1 :]
        if (labels == k).sum() < 2 or contact_share(k) >= settings.transition_share:
            dissolve(k)
            tested.clear()
            continue
        lead = _leave_one_out_lead(x[labels == k], np.stack([centroid(j) for j in larger]))
        if lead < settings.distinct_margin:
            dissolve(k)
            tested.clear()  # the clusters that took its windows changed
    # 3. close centroids
    while True:
        clusters = list(np.unique(labels))
        if len(clusters) < 2:
            break
        centres = np.stack([centroid(k) for k in clusters])
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -np.inf)
        a, b = np.unravel_index(int(similarity.argmax()), similarity.shape)
        if similarity[a, b] < settings.merge_cosine:
            break
        labels[labels == clusters[b]] = clusters[a]
    # number by first appearance, as FunASR's correct_labels does
    order: dict[int, int] = {}
    for k in labels:
        order.setdefault(int(k), len(order))
    return np.asarray([order[int(k)] for k in labels], dtype=int)


__all__ = ["REAL_CAMPP", "TINY_CAMPP", "WINDOW_SHIFT_SECONDS", "RefineSettings", "defaults_for", "refine_labels",
           "settings_for"]
