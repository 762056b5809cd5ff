"""Evaluation metrics for liveness (presentation-attack detection) and face verification.

Pure numpy / scikit-learn functions without torch, so the same code scores a validation epoch
inside training and a saved score file offline. Every metric dict holds plain Python floats,
ready for JSON and TensorBoard.

Liveness conventions (vocabulary of ISO/IEC 30107-3)
----------------------------------------------------
* A liveness score is higher for presentations more likely to be bona fide (live). A
  presentation is accepted as live when ``score >= threshold``.
* APCER of one attack type (PAI species): the share of that type's attack presentations
  accepted as live. ``apcer`` is the maximum over the types present, as in ISO/IEC 30107-3 and
  the OULU-NPU protocol, so one weak attack type cannot hide behind easy ones.
* BPCER: the share of bona fide presentations rejected.
* ACER = (max-over-types APCER + BPCER) / 2.
* HTER = (pooled APCER over all attacks + BPCER) / 2.
* EER: the ROC point minimising |pooled APCER - BPCER|, reported as the mean of the two (finite
  samples rarely cross exactly); the EER threshold is that point's threshold.
* AUC takes live as the positive class.
* BPCER@APCER=x (x = 1%, 5%, 10%): the lowest BPCER among thresholds whose pooled APCER <= x.
* Without attack types every attack belongs to one type named ``"attack"``.
* ``threshold=None`` uses the EER threshold of the scores given (what validation does); a test
  run passes the validation threshold, which is applied unchanged.
* Threshold rules (`threshold_for`, an operator's choice on validation): ``eer``; ``apcer=x``, the
  lowest threshold at which every attack type's APCER is <= x (the lowest BPCER within that
  budget); ``bpcer=x``, the highest threshold at which BPCER is <= x (the lowest APCER within it).
  Scores are values of any order-keeping unit (liveness models give the log-odds of live).

Verification conventions (LFW protocol)
---------------------------------------
* Scores are similarities; a pair is declared "same person" when ``score >= threshold``.
* FAR: share of impostor pairs accepted; TAR: share of genuine pairs accepted.
* TAR@FAR=x is NaN when there are fewer than 1/x impostor pairs, because such a FAR cannot be
  told apart from zero and the number would be an optimistic guess.
* The ROC table (IJB-B / IJB-C) lists TAR at FAR = 1e-6 ... 1e-1 with the TAR@FAR rule above:
  the operating point never exceeds the FAR asked for. (insightface's IJB script takes the ROC
  point nearest to the FAR, which may lie just above it; with millions of impostor pairs the two
  differ by at most one step of the curve.)
* k-fold accuracy: contiguous folds in the order given (as pairs.txt lists them); each fold is
  scored with the threshold that maximises accuracy on the other folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import auc, roc_auc_score, roc_curve

__all__ = [
    "eer_threshold",
    "parse_threshold_rule",
    "threshold_rule_option",
    "threshold_for",
    "liveness_metrics",
    "roc_points",
    "tar_at_far",
    "kfold_accuracy",
    "verification_metrics",
    "ROC_TABLE_FARS",
    "far_key",
    "roc_table",
]

# Rates are ratios of counts; a target such as 0.05 typed by a user may differ from k/n in the
# last bit, and that must not move an operating point across the target.
_RATE_RTOL = 1e-9


def _check_inputs(scores, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert (scores, labels); `name` is the label argument's name for messages."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and {name} must be 1-D, got shapes {s.shape} and {y.shape}")
    if len(s) != len(y):
        raise ValueError(f"scores has {len(s)} entries but {name} has {len(y)}")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain infinite values")
    if y.dtype != bool:
        if y.size and not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {y.dtype}")
        y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(
            f"{name} must contain both classes, got {n_pos} positive and {len(y) - n_pos} negative"
        )
    return s, y


def _roc(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Keep every distinct score: operating-point searches (EER, BPCER@APCER, TAR@FAR) need the
    # collinear points that drop_intermediate would discard.
    return roc_curve(y, s, drop_intermediate=False)


def roc_points(scores, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr, thresholds) with ``positive`` as the positive class.

    Thresholds are descending; point i counts ``score >= thresholds[i]`` as positive. The first
    threshold is +inf (nothing accepted). Raises ValueError on invalid input.
    """
    return _roc(*_check_inputs(scores, positive, "positive"))


def _eer_from_roc(fpr, tpr, thresholds) -> tuple[float, float]:
    fnr = 1.0 - tpr
    # Skip the +inf point: with both classes present it never beats the next point (whose
    # |fpr - fnr| is at most 1), only ties it when all scores are equal, and callers log and
    # reuse the threshold, which should be a finite score.
    gap = np.abs(fpr[1:] - fnr[1:])
    i = 1 + int(np.argmin(gap))
    return float((fpr[i] + fnr[i]) / 2.0), float(thresholds[i])


def eer_threshold(scores, is_live) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``.

    Works for any score where higher means the positive class (live, or same person).
    """
    return _eer_from_roc(*_roc(*_check_inputs(scores, is_live, "is_live")))


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """``"eer"`` -> ("eer", None); ``"apcer=0.01"`` -> ("apcer", 0.01); ``"bpcer=0.05"`` -> ("bpcer", 0.05).

    A ValueError says what is valid when `rule` is none of them or its rate is outside (0, 1).
    """
    wanted = "eer, apcer=<rate> or bpcer=<rate> with the rate in (0, 1), e.g. apcer=0.01"
    text = str(rule).strip().lower()
    if text == "eer":
        return "eer", None
    kind, _, value = text.partition("=")
    try:
        target = float(value)
    except ValueError:
        target = float("nan")
    if kind.strip() not in ("apcer", "bpcer") or not 0.0 < target < 1.0:
        raise ValueError(f"expected {wanted}, got {str(rule)[:80]!r}")
    return kind.strip(), target


def threshold_rule_option(instance: Any, attribute: Any, value: str) -> None:
    """An attrs validator for a trainer's ``threshold`` option: a rule `parse_threshold_rule` accepts."""
    try:
        parse_threshold_rule(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def threshold_for(scores, is_live, rule: str = "eer", attack_types: Sequence[str] | None = None) -> float:
    """The decision threshold `rule` picks on these scores (see the module docstring); always finite."""
    kind, target = parse_threshold_rule(rule)
    s, live = _check_inputs(scores, is_live, "is_live")
    if kind == "eer":
        return _eer_from_roc(*_roc(s, live))[1]
    if kind == "bpcer":
        # At most floor(target * n) live scores may fall below the threshold.
        ranked = np.sort(s[live])
        return float(ranked[int(np.floor(target * len(ranked) * (1.0 + _RATE_RTOL)))])
    # apcer: per type, at most floor(target * n) attacks may score >= threshold, so the threshold
    # must lie above that type's (k+1)-th highest score; the lowest score above all of those.
    floor = -np.inf
    for mask in _attack_type_masks(attack_types, live).values():
        ranked = np.sort(s[mask])[::-1]
        floor = max(floor, ranked[int(np.floor(target * len(ranked) * (1.0 + _RATE_RTOL)))])
    above = s[s > floor]
    return float(above.min()) if above.size else float(np.nextafter(floor, np.inf))


def _min_bpcer_at_apcer(fpr, tpr, target: float) -> float:
    # The +inf point has fpr 0, so the set is never empty.
    allowed = fpr <= target * (1.0 + _RATE_RTOL)
    return float(np.min(1.0 - tpr[allowed]))


def _attack_type_masks(attack_types, live: np.ndarray) -> dict[str, np.ndarray]:
    """Map each attack type present to the mask of its attack samples, sorted by name."""
    attack = ~live
    if attack_types is None:
        return {"attack": attack}
    if isinstance(attack_types, str) or len(attack_types) != len(live):
        n = "a string" if isinstance(attack_types, str) else f"{len(attack_types)} entries"
        raise ValueError(f"attack_types must be a sequence of {len(live)} strings, got {n}")
    names = np.array(["" if t is None else str(t) for t in attack_types], dtype=object)
    unnamed = attack & (names == "")
    if unnamed.any():
        raise ValueError(
            f"{int(unnamed.sum())} attack sample(s) have no attack type (first at index "
            f"{int(np.argmax(unnamed))}); attack_types is only optional for live samples"
        )
    return {str(t): attack & (names == t) for t in sorted(set(names[attack]))}


def liveness_metrics(
    scores,
    is_live,
    attack_types: Sequence[str] | None = None,
    threshold: float | None = None,
) -> dict[str, float]:
    """Presentation-attack-detection metrics at ``threshold`` plus threshold-free ones.

    See the module docstring for definitions. ``attack_types`` is ignored for live samples.
    Raises ValueError if a class is absent, lengths differ, or scores contain NaN.
    """
    s, live = _check_inputs(scores, is_live, "is_live")
    type_masks = _attack_type_masks(attack_types, live)
    fpr, tpr, thresholds = _roc(s, live)
    eer, eer_thr = _eer_from_roc(fpr, tpr, thresholds)
    threshold = eer_thr if threshold is None else float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")

    accepted = s >= threshold
    bpcer = float(np.mean(~accepted[live]))
    per_type = {f"apcer_{t}": float(np.mean(accepted[m])) for t, m in type_masks.items()}
    apcer = max(per_type.values())
    pooled_apcer = float(np.mean(accepted[~live]))
    return {
        "apcer": apcer,
        **per_type,
        "bpcer": bpcer,
        "acer": (apcer + bpcer) / 2.0,
        "hter": (pooled_apcer + bpcer) / 2.0,
        "eer": eer,
        "auc": float(roc_auc_score(live, s)),
        "bpcer_at_apcer_1pct": _min_bpcer_at_apcer(fpr, tpr, 0.01),
        "bpcer_at_apcer_5pct": _min_bpcer_at_apcer(fpr, tpr, 0.05),
        "bpcer_at_apcer_10pct": _min_bpcer_at_apcer(fpr, tpr, 0.10),
        "threshold": threshold,
        "num_live": float(live.sum()),
        "num_attack": float((~live).sum()),
        "accuracy": float(np.mean(accepted == live)),
    }


def _tar_from_roc(fpr, tpr, num_impostor: int, far: float) -> float:
    if num_impostor * far < 1.0 - _RATE_RTOL:
        return float("nan")
    # TAR only grows as the threshold falls, so the best TAR within the FAR budget is the TAR
    # at the lowest threshold still inside it.
    return float(np.max(tpr[fpr <= far * (1.0 + _RATE_RTOL)]))


def tar_at_far(scores, is_same, far: float) -> float:
    """True accept rate at the lowest threshold whose false accept rate is <= ``far``.

    That is the highest TAR reachable without exceeding ``far``. Returns NaN when there are
    fewer than ``1 / far`` impostor pairs, too few to resolve that FAR.
    """
    if not 0.0 < far <= 1.0:
        raise ValueError(f"far must be in (0, 1], got {far}")
    s, same = _check_inputs(scores, is_same, "is_same")
    fpr, tpr, _ = _roc(s, same)
    return _tar_from_roc(fpr, tpr, int((~same).sum()), far)


def _best_threshold(s: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy on (s, same); ties go to the lowest candidate."""
    uniq = np.unique(s)
    # Midpoints never coincide with a score, so `>=` vs `>` cannot matter on held-out pairs.
    # Accept-all / reject-all come last: they win only when strictly better, and they keep a
    # candidate when every training score is equal.
    candidates = np.concatenate(
        ((uniq[:-1] + uniq[1:]) / 2.0, [uniq[0], np.nextafter(uniq[-1], np.inf)])
    )
    pos = np.sort(s[same])
    neg = np.sort(s[~same])
    # searchsorted(..., "left") counts the scores below each candidate, i.e. the rejected ones.
    correct = len(pos) - np.searchsorted(pos, candidates) + np.searchsorted(neg, candidates)
    return float(candidates[int(np.argmax(correct))])


def kfold_accuracy(scores, is_same, folds: int = 10) -> tuple[float, float, float]:
    """LFW k-fold verification accuracy: ``(mean accuracy, std, mean threshold)``.

    Folds are contiguous in the given order; each held-out fold uses the threshold that is best
    on the other folds. The std is the population std (ddof=0) of the per-fold accuracies.
    """
    s, same = _check_inputs(scores, is_same, "is_same")
    is_int = isinstance(folds, (int, np.integer)) and not isinstance(folds, bool)
    if not is_int or not 2 <= folds <= len(s):
        raise ValueError(f"folds must be an integer in [2, {len(s)}], got {folds!r}")
    accuracies, thresholds = [], []
    for held_out in np.array_split(np.arange(len(s)), folds):
        train = np.ones(len(s), dtype=bool)
        train[held_out] = False
        t = _best_threshold(s[train], same[train])
        accuracies.append(np.mean((s[held_out] >= t) == same[held_out]))
        thresholds.append(t)
    return float(np.mean(accuracies)), float(np.std(accuracies)), float(np.mean(thresholds))


def verification_metrics(scores, is_same, folds: int = 10) -> dict[str, float]:
    """Face-verification metrics for similarity ``scores`` of pairs (``is_same`` = genuine).

    ``threshold`` is the mean of the per-fold thresholds from :func:`kfold_accuracy`; a protocol
    with fewer pairs than `folds` (a small custom pack) is split into one fold per pair.
    """
    s, same = _check_inputs(scores, is_same, "is_same")
    accuracy, accuracy_std, threshold = kfold_accuracy(s, same, min(folds, len(s)))
    fpr, tpr, thresholds = _roc(s, same)
    num_impostor = int((~same).sum())
    return {
        "accuracy": accuracy,
        "accuracy_std": accuracy_std,
        "threshold": threshold,
        "eer": _eer_from_roc(fpr, tpr, thresholds)[0],
        "auc": float(roc_auc_score(same, s)),
        "tar_at_far_1e-3": _tar_from_roc(fpr, tpr, num_impostor, 1e-3),
        "tar_at_far_1e-4": _tar_from_roc(fpr, tpr, num_impostor, 1e-4),
        "num_pairs": float(len(s)),
    }


#: The false accept rates of the IJB-B / IJB-C 1:1 ROC table.
ROC_TABLE_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def far_key(far: float) -> str:
    """The metric name of TAR at `far`: ``tar_at_far_1e-4`` (as in `verification_metrics`)."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"tar_at_far_{mantissa}e{int(exponent)}"


def roc_table(scores, is_same, fars: Sequence[float] = ROC_TABLE_FARS) -> dict[str, float]:
    """TAR at each FAR of `fars` (NaN where too few impostor pairs resolve it), EER and AUC.

    One ROC curve (scikit-learn's `roc_curve`) serves every row; for template protocols with
    millions of pairs, where k-fold accuracy means nothing.
    """
    for far in fars:
        if not 0.0 < far <= 1.0:
            raise ValueError(f"far must be in (0, 1], got {far}")
    s, same = _check_inputs(scores, is_same, "is_same")
    fpr, tpr, thresholds = _roc(s, same)
    num_impostor = int((~same).sum())
    table = {far_key(far): _tar_from_roc(fpr, tpr, num_impostor, far) for far in fars}
    table.update({"eer": _eer_from_roc(fpr, tpr, thresholds)[0], "auc": float(auc(fpr, tpr)),
                  "num_genuine": float(len(s) - num_impostor), "num_impostor": float(num_impostor)})
    return table
