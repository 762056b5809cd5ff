"""Tests for faceauth.metrics: hand-computed cases plus a few Hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceauth import metrics

# --- liveness: hand-computed operating point -------------------------------------------------

# 4 live, 4 print, 4 replay; evaluated at threshold 0.5 (accept when score >= 0.5).
#   live   0.9 0.8 0.7 | 0.3      -> 1 of 4 rejected          BPCER        = 1/4
#   print  0.6 | 0.2 0.1 0.05     -> 1 of 4 accepted          APCER_print  = 1/4
#   replay 0.65 0.5 | 0.4 0.1     -> 2 of 4 accepted (0.5 is) APCER_replay = 1/2
#   APCER = max = 1/2, ACER = (1/2 + 1/4)/2 = 3/8
#   pooled APCER = 3/8, HTER = (3/8 + 1/4)/2 = 5/16
#   correct = 3 live + 3 print + 2 replay = 8 of 12 -> accuracy 2/3
LIVE = [0.9, 0.8, 0.7, 0.3]
PRINT = [0.6, 0.2, 0.1, 0.05]
REPLAY = [0.65, 0.5, 0.4, 0.1]
SCORES = np.array(LIVE + PRINT + REPLAY)
IS_LIVE = np.array([True] * 4 + [False] * 8)
TYPES = [None] * 4 + ["print"] * 4 + ["replay"] * 4


def test_hand_computed_rates_per_attack_type():
    m = metrics.liveness_metrics(SCORES, IS_LIVE, TYPES, threshold=0.5)
    assert m["bpcer"] == 0.25
    assert m["apcer_print"] == 0.25
    assert m["apcer_replay"] == 0.5
    assert m["apcer"] == 0.5  # the max over types, not the pooled 3/8
    assert m["acer"] == 0.375
    assert m["hter"] == 0.3125
    assert m["accuracy"] == 2 / 3
    assert m["threshold"] == 0.5
    assert m["num_live"] == 4.0 and m["num_attack"] == 8.0


def test_result_is_flat_dict_of_python_floats_with_the_documented_keys():
    m = metrics.liveness_metrics(SCORES, IS_LIVE, TYPES, threshold=0.5)
    assert set(m) == {
        "apcer", "apcer_print", "apcer_replay", "bpcer", "acer", "hter", "eer", "auc",
        "bpcer_at_apcer_1pct", "bpcer_at_apcer_5pct", "bpcer_at_apcer_10pct", "threshold", "num_live", "num_attack",
        "accuracy",
    }  # fmt: skip
    assert all(type(v) is float for v in m.values())


def test_without_attack_types_all_attacks_are_one_type():
    m = metrics.liveness_metrics(SCORES, IS_LIVE, threshold=0.5)
    assert m["apcer_attack"] == 0.375
    assert m["apcer"] == 0.375
    assert m["acer"] == m["hter"] == (0.375 + 0.25) / 2
    assert not any(k in m for k in ("apcer_print", "apcer_replay"))


def test_threshold_is_applied_unchanged():
    # Validation threshold 0.5 applied to a shifted test set: every live sample passes, every
    # attack is rejected except 0.55. The test set's own EER threshold would be different.
    test_scores = np.array([0.95, 0.9, 0.6, 0.52, 0.55, 0.45, 0.3])
    test_live = np.array([True, True, True, True, False, False, False])
    _, own_threshold = metrics.eer_threshold(test_scores, test_live)
    assert own_threshold != 0.5
    m = metrics.liveness_metrics(test_scores, test_live, threshold=0.5)
    assert m["threshold"] == 0.5
    assert m["bpcer"] == 0.0
    assert m["apcer"] == pytest.approx(1 / 3)


def test_default_threshold_is_the_eer_threshold():
    eer, threshold = metrics.eer_threshold(SCORES, IS_LIVE)
    m = metrics.liveness_metrics(SCORES, IS_LIVE, TYPES)
    assert m["threshold"] == threshold
    assert m["eer"] == eer


# --- EER / AUC / BPCER@APCER -----------------------------------------------------------------


def test_eer_perfectly_separable():
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    live = [False, False, False, True, True, True]
    assert metrics.eer_threshold(scores, live) == (0.0, 0.6)
    m = metrics.liveness_metrics(scores, live)
    assert m["apcer"] == m["bpcer"] == m["acer"] == 0.0
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0


def test_eer_symmetric_overlap():
    # Attacks mirror the live scores around 0.5. At threshold 0.6: attacks >= 0.6 are {0.8}
    # (APCER 1/4), live < 0.6 are {0.2} (BPCER 1/4); every other point has |APCER - BPCER| >= 1/4.
    live = [0.2, 0.6, 0.7, 0.8]
    attack = [0.2, 0.3, 0.4, 0.8]
    eer, threshold = metrics.eer_threshold(live + attack, [True] * 4 + [False] * 4)
    assert eer == 0.25
    assert threshold == 0.6


def test_eer_without_exact_crossing_reports_the_mean():
    # Points (threshold: APCER, BPCER): 0.9: 0, 2/3 | 0.8: 0, 1/3 | 0.7: 1/2, 1/3 | 0.6: 1/2, 0.
    # Smallest gap is 1/6 at 0.7 -> EER = (1/2 + 1/3) / 2 = 5/12.
    eer, threshold = metrics.eer_threshold([0.6, 0.8, 0.9, 0.1, 0.7], [1, 1, 1, 0, 0])
    assert eer == pytest.approx(5 / 12)
    assert threshold == 0.7


def test_constant_scores_give_a_finite_threshold():
    eer, threshold = metrics.eer_threshold([0.3] * 4, [True, False, True, False])
    assert (eer, threshold) == (0.5, 0.3)


def test_auc_matches_hand_count_of_concordant_pairs():
    # Same data as the symmetric case. Live beats attack in (live, attack) pairs:
    # 0.2: tie with 0.2 -> 0.5 | 0.6: 3 | 0.7: 3 | 0.8: 3 + tie 0.5 = 3.5 -> 10 of 16.
    live = [0.2, 0.6, 0.7, 0.8]
    attack = [0.2, 0.3, 0.4, 0.8]
    m = metrics.liveness_metrics(live + attack, [True] * 4 + [False] * 4)
    assert m["auc"] == 10 / 16


def test_bpcer_at_apcer():
    # 100 attacks scored 0.00 .. 0.99; 10 live. APCER <= 1% allows the single attack at 0.99,
    # so the lowest allowed threshold is 0.99 (the next score, 0.98, is an attack):
    # live >= 0.99 are 0.995, 0.992 -> BPCER 8/10. APCER <= 5% allows attacks 0.95 .. 0.99, so
    # the threshold may fall to the live score 0.945 (still above attack 0.94):
    # live >= 0.945 are six -> BPCER 4/10.
    attack = list(np.arange(100) / 100)
    live = [0.995, 0.992, 0.975, 0.965, 0.955, 0.945, 0.5, 0.4, 0.3, 0.2]
    m = metrics.liveness_metrics(live + attack, [True] * 10 + [False] * 100)
    assert m["bpcer_at_apcer_1pct"] == pytest.approx(0.8)
    assert m["bpcer_at_apcer_5pct"] == pytest.approx(0.4)
    assert m["bpcer_at_apcer_10pct"] == pytest.approx(0.4)  # attacks 0.90 .. 0.99 allowed: no further live score


# --- verification ----------------------------------------------------------------------------


def _lfw_like_case():
    # 10 folds of 2 pairs: folds 0-8 are (genuine 0.8, impostor 0.2); fold 9 is inverted
    # (genuine 0.1, impostor 0.9). Training on folds that include fold 9, threshold 0.5 scores
    # 16/18 (0.15 and 0.85 score 8/18), so folds 0-8 get accuracy 1. Fold 9 is tested with 0.5
    # from clean folds and gets 0. Mean 0.9, std sqrt(0.9 * 0.1) = 0.3, mean threshold 0.5.
    scores = [0.8, 0.2] * 9 + [0.1, 0.9]
    same = [True, False] * 10
    return scores, same


def test_kfold_accuracy_known_answer():
    accuracy, std, threshold = metrics.kfold_accuracy(*_lfw_like_case())
    assert accuracy == pytest.approx(0.9)
    assert std == pytest.approx(0.3)
    assert threshold == pytest.approx(0.5)


def test_kfold_folds_are_contiguous_in_given_order():
    # Contiguous folds keep both inverted pairs in one fold (per-fold accuracies nine 1s and a
    # 0: std 0.3, see above). Strided folds (i::10) would put them in two folds with a clean
    # pair each (eight 1s and two 1/2s: std 0.2). Rotating the list moves the failing fold
    # without changing the result. With 5 folds the inverted pairs share the last fold with
    # two clean pairs, which scores 1/2: accuracies 1, 1, 1, 1, 1/2 -> mean 0.9, std 0.2.
    scores, same = _lfw_like_case()
    rotated = metrics.kfold_accuracy(scores[-2:] + scores[:-2], same)
    assert rotated == pytest.approx((0.9, 0.3, 0.5))
    assert metrics.kfold_accuracy(scores, same, folds=5) == pytest.approx((0.9, 0.2, 0.5))


def test_tar_at_far_resolves_the_budget_and_nan_when_too_few_impostors():
    # 1000 impostors 0.000 .. 0.999; FAR <= 1e-3 allows the impostor at 0.999, so genuine
    # 0.9995 and 0.9985 are accepted (threshold 0.9985) but 0.5 is not -> TAR 2/3.
    impostor = list(np.arange(1000) / 1000)
    genuine = [0.9995, 0.9985, 0.5]
    scores = genuine + impostor
    same = [True] * 3 + [False] * 1000
    assert metrics.tar_at_far(scores, same, 1e-3) == pytest.approx(2 / 3)
    assert math.isnan(metrics.tar_at_far(scores, same, 1e-4))
    # 999 impostors cannot resolve a FAR of 1e-3.
    assert math.isnan(metrics.tar_at_far(scores[:-1], same[:-1], 1e-3))


def test_verification_metrics_keys():
    m = metrics.verification_metrics(*_lfw_like_case())
    assert set(m) == {
        "accuracy", "accuracy_std", "threshold", "eer", "auc", "tar_at_far_1e-3",
        "tar_at_far_1e-4", "num_pairs",
    }  # fmt: skip
    assert all(type(v) is float for v in m.values())
    assert m["num_pairs"] == 20.0
    assert m["accuracy"] == pytest.approx(0.9)
    assert math.isnan(m["tar_at_far_1e-3"]) and math.isnan(m["tar_at_far_1e-4"])


def test_roc_points_is_the_shared_curve():
    fpr, tpr, thresholds = metrics.roc_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert thresholds[0] == np.inf
    assert list(thresholds[1:]) == [0.8, 0.4, 0.35, 0.1]
    assert list(fpr) == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert list(tpr) == [0.0, 0.5, 0.5, 1.0, 1.0]


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [True, True], "both classes"),
        ([0.1, 0.2], [False, False], "both classes"),
        ([0.1, 0.2, 0.3], [True, False], "entries"),
        ([0.1, float("nan")], [True, False], "NaN"),
    ],
)
@pytest.mark.parametrize(
    "function",
    [
        metrics.eer_threshold,
        metrics.liveness_metrics,
        metrics.roc_points,
        metrics.verification_metrics,
        lambda s, y: metrics.tar_at_far(s, y, 0.1),
        lambda s, y: metrics.kfold_accuracy(s, y, folds=2),
    ],
)
def test_invalid_input_raises_value_error(function, scores, labels, message):
    with pytest.raises(ValueError, match=message):
        function(scores, labels)


def test_invalid_attack_types_raise():
    with pytest.raises(ValueError, match="sequence of 12"):
        metrics.liveness_metrics(SCORES, IS_LIVE, TYPES[:-1])
    with pytest.raises(ValueError, match="no attack type"):
        metrics.liveness_metrics(SCORES, IS_LIVE, TYPES[:-1] + [None])


# --- properties ------------------------------------------------------------------------------

TYPE_NAMES = ("print", "replay", "mask")


@st.composite
def liveness_cases(draw):
    # Integer-valued scores keep `score + c >= threshold + c` exact for the shift property.
    live = draw(st.lists(st.integers(-20, 20), min_size=1, max_size=20))
    attack = draw(st.lists(st.integers(-20, 20), min_size=1, max_size=20))
    types = draw(st.lists(st.sampled_from(TYPE_NAMES), min_size=len(attack), max_size=len(attack)))
    scores = np.array(live + attack, dtype=float)
    is_live = np.array([True] * len(live) + [False] * len(attack))
    return scores, is_live, [None] * len(live) + types


@settings(max_examples=40, deadline=None)
@given(liveness_cases(), st.integers(-21, 21))
def test_rates_are_fractions_and_acer_bounds_hter(case, threshold):
    m = metrics.liveness_metrics(*case, threshold=float(threshold))
    for key, value in m.items():
        if key not in ("threshold", "num_live", "num_attack"):
            assert 0.0 <= value <= 1.0, key
    assert m["apcer"] == max(v for k, v in m.items() if k.startswith("apcer_"))
    assert m["acer"] >= m["hter"]


@settings(max_examples=40, deadline=None)
@given(liveness_cases(), st.integers(-21, 21), st.integers(-1000, 1000))
def test_shifting_scores_and_threshold_changes_nothing(case, threshold, shift):
    scores, is_live, types = case
    for t in (float(threshold), None):
        before = metrics.liveness_metrics(scores, is_live, types, threshold=t)
        t_shifted = None if t is None else t + shift
        after = metrics.liveness_metrics(scores + shift, is_live, types, threshold=t_shifted)
        assert after.pop("threshold") == before.pop("threshold") + shift
        assert after == before


@settings(max_examples=40, deadline=None)
@given(liveness_cases())
def test_auc_is_concordance_and_survives_label_swap(case):
    scores, is_live, _ = case
    live, attack = scores[is_live][:, None], scores[~is_live][None, :]
    concordance = (np.sum(live > attack) + 0.5 * np.sum(live == attack)) / live.size / attack.size
    auc = metrics.liveness_metrics(scores, is_live)["auc"]
    assert auc == pytest.approx(concordance)
    assert metrics.liveness_metrics(-scores, ~is_live)["auc"] == pytest.approx(auc)


@settings(max_examples=30, deadline=None)
@given(liveness_cases(), st.integers(2, 5))
def test_kfold_accuracy_is_a_fraction(case, folds):
    scores, same, _ = case
    folds = min(folds, len(scores))
    accuracy, std, _ = metrics.kfold_accuracy(scores, same, folds)
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= std <= 0.5


def test_verification_metrics_of_fewer_pairs_than_folds_use_one_fold_per_pair():
    scores, same = [0.9, 0.1, 0.8, 0.2], [True, False, True, False]
    small = metrics.verification_metrics(scores, same)
    assert small["accuracy"] == metrics.kfold_accuracy(scores, same, folds=4)[0] == 1.0
