"""Metrics of a whole face-authentication system (matcher + liveness, fused or not) on verification attempts.

Measured like the field (Chingovska et al., "Anti-spoofing in action: joint operation with a
verification system"). Every attempt is of one kind: ``genuine`` (the enrolled person, live: to be
accepted), ``impostor`` (another live person, a zero-effort impostor) or ``spoof`` (a presentation
attack on the enrolled person), with an attack type for spoofs. An attempt is accepted when
``score >= threshold`` (scores: higher for "the enrolled person and live").

* Licit protocol (genuine vs. impostor): FAR, the share of impostor attempts accepted; FRR, the
  share of genuine attempts rejected; HTER = (FAR + FRR) / 2; EER and AUC of the scores.
* Spoof protocol (genuine vs. spoof): SFAR, the share of spoof attempts accepted, pooled and per
  attack type (``sfar_<type>``, when there are several types).
* `threshold_at_far`: the operating point chosen on validation, the lowest threshold whose licit
  FAR is <= the target (the best FRR within it), applied unchanged to test (the joint operating point).
* ``hter_at_eer`` and ``sfar_at_eer``: HTER and SFAR at an EER threshold (validation's, when given).

A rate over no attempts is NaN. Pure numpy / scikit-learn, as the other metrics; `det_figure` draws
with matplotlib's Agg canvas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceauth.metrics import eer_threshold as _eer_and_threshold
from faceauth.metrics import roc_points

__all__ = ["ATTEMPT_KINDS", "decision_figures", "det_figure", "licit_eer_threshold", "scored_figures",
           "threshold_at_far"]

ATTEMPT_KINDS = ("genuine", "impostor", "spoof")


def _rate(mask: np.ndarray, accepted: np.ndarray) -> float:
    return float(np.mean(accepted[mask])) if mask.any() else float("nan")


def decision_figures(accepted: np.ndarray, kinds: np.ndarray, attack_types: np.ndarray) -> dict[str, float]:
    """FAR and FRR (licit protocol), HTER, and SFAR (spoof protocol, pooled and per attack type)."""
    accepted = np.asarray(accepted, bool)
    far = _rate(kinds == "impostor", accepted)
    frr = 1.0 - _rate(kinds == "genuine", accepted)
    figures = {"far": far, "frr": frr, "hter": (far + frr) / 2, "sfar": _rate(kinds == "spoof", accepted)}
    spoof_types = sorted(set(attack_types[kinds == "spoof"].tolist()))
    if len(spoof_types) > 1:
        for attack in spoof_types:
            figures[f"sfar_{attack}"] = _rate((kinds == "spoof") & (attack_types == attack), accepted)
    return figures


def threshold_at_far(scores: np.ndarray, kinds: np.ndarray, target: float) -> float:
    """The lowest threshold whose FAR on the licit protocol is <= `target` (the best FRR within it)."""
    licit = (kinds == "genuine") | (kinds == "impostor")
    fpr, _, thresholds = roc_points(scores[licit], kinds[licit] == "genuine")
    index = int(np.flatnonzero(fpr <= target * (1 + 1e-9))[-1])
    if index == 0:  # only "accept nothing" reaches the target: just above the highest score
        return float(np.nextafter(np.max(scores[licit]), np.inf))
    return float(thresholds[index])


def licit_eer_threshold(scores: np.ndarray, kinds: np.ndarray) -> float:
    """The EER threshold of the licit protocol (genuine vs. impostor)."""
    licit = kinds != "spoof"
    return _eer_and_threshold(scores[licit], kinds[licit] == "genuine")[1]


def scored_figures(scores: np.ndarray, kinds: np.ndarray, attack_types: np.ndarray, threshold: float,
                   eer_threshold: float | None = None) -> dict[str, float]:
    """A scored system's figures at `threshold`, its licit EER and AUC, and HTER/SFAR at `eer_threshold`
    (None: the EER threshold of these scores)."""
    from sklearn.metrics import roc_auc_score

    licit = (kinds == "genuine") | (kinds == "impostor")
    genuine = kinds[licit] == "genuine"
    eer, own_eer_threshold = _eer_and_threshold(scores[licit], genuine)
    figures = {"threshold": float(threshold), **decision_figures(scores >= threshold, kinds, attack_types),
               "eer": eer, "auc": float(roc_auc_score(genuine, scores[licit]))}
    at_eer = eer_threshold if eer_threshold is not None else own_eer_threshold
    by_eer = decision_figures(scores >= at_eer, kinds, attack_types)
    figures.update({"eer_threshold": float(at_eer), "hter_at_eer": by_eer["hter"], "sfar_at_eer": by_eer["sfar"]})
    return figures


def det_figure(curves: dict[str, dict[str, Any]], title: str) -> Any:
    """DET curves (normal-deviate axes) of each system, licit (FRR vs. FAR) and spoof (FRR vs. SFAR) side by side.

    `curves` maps a system's name to ``{"kinds", "accepted"}`` (its decisions at its threshold: a point)
    and, for a scored system, ``"scores"`` (a curve through that point)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from scipy.stats import norm
    from sklearn.metrics import det_curve

    figure = Figure(figsize=(9, 4.2))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    for position, (attack, label) in enumerate((("impostor", "FAR (zero-effort impostors)"),
                                                ("spoof", "SFAR (spoof attempts accepted)"))):
        axes = figure.add_subplot(1, 2, position + 1)
        for name, curve in curves.items():
            kinds, genuine = curve["kinds"], curve["kinds"] == "genuine"
            mask = genuine | (kinds == attack)
            floor = 0.5 / max(1, int(mask.sum()))
            colour = "black"
            if "scores" in curve and genuine[mask].any() and not genuine[mask].all():
                fpr, fnr, _ = det_curve(genuine[mask], curve["scores"][mask])
                x, y = np.clip(fpr, floor, 1 - floor), np.clip(fnr, floor, 1 - floor)
                colour = axes.plot(norm.ppf(x), norm.ppf(y), label=name)[0].get_color()
            accepted = curve["accepted"]
            point = (np.clip(np.mean(accepted[kinds == attack]), floor, 1 - floor),
                     np.clip(1 - np.mean(accepted[genuine]), floor, 1 - floor))
            axes.plot(norm.ppf(point[0]), norm.ppf(point[1]), "o" if "scores" in curve else "s", color=colour,
                      label=None if "scores" in curve else name)
        axes.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        axes.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        lo, hi = norm.ppf(5e-4), norm.ppf(0.99)
        axes.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=label, ylabel="FRR", title=f"{title}: {attack}s")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure
