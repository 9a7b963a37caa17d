"""The scoring of `python -m bench separation` (no torch: embeddings are made up here)."""

from __future__ import annotations

import math

import numpy as np

from bench.separation import equal_error_rate, score


def test_equal_error_rate_is_zero_when_scores_separate_and_half_when_they_do_not() -> None:
    assert equal_error_rate(np.array([0.9, 0.95, 0.99]), np.array([0.1, 0.2, 0.3])) == 0.0
    same = np.linspace(0.0, 1.0, 101)
    assert abs(equal_error_rate(same, same.copy()) - 0.5) < 0.02


def _takes(group: str, vectors: dict[str, list[list[float]]]) -> list[dict]:
    return [{"group": group, "voice": voice, "take": take, "speech_seconds": 15.0, "seconds": 1.0,
             "embeddings": rows} for voice, rows in vectors.items() for take in ("A", "B")]


def test_score_pairs_take_a_with_take_b_and_compares_centroids_with_the_merge_threshold() -> None:
    # three voices on orthogonal axes, two windows each; c is a near copy of a
    vectors = {"a": [[1.0, 0.1, 0.0], [1.0, -0.1, 0.0]], "b": [[0.0, 1.0, 0.0], [0.0, 1.0, 0.2]],
               "c": [[1.0, 0.0, 0.05], [1.0, 0.0, -0.05]]}
    out = score({"merge_threshold": 0.78, "takes": _takes("held-out", vectors)})["held-out"]
    centroid, window = out["centroid"], out["window"]
    assert centroid["pairs_same"] == 3 and centroid["pairs_different"] == 6
    assert centroid["same_mean"] > 0.99 and centroid["same_split"] == 0.0
    # a ~ c and c ~ a (both orders of take A / take B) reach the threshold, nothing else
    assert math.isclose(centroid["different_merged"], 2 / 6)
    assert {(a, b) for _, a, b in out["close"]} == {("a", "c"), ("c", "a")}
    assert window["pairs_same"] == 3 * 4 and window["pairs_different"] == 6 * 4
    assert math.isnan(window["different_merged"])  # the clusterer never thresholds single windows
    assert out["facts"]["voices"] == 3 and out["facts"]["windows_mean"] == 2.0
