"""The promotion rule: a candidate replaces @champion only if its primary metric is better beyond both the
configured margin and its own uncertainty, and it does not copy its training data."""

from __future__ import annotations

import math
from typing import NamedTuple


class Decision(NamedTuple):
    promote: bool
    reason: str
    margin: float | None = None  # register.min_improvement x |champion|
    half_width: float | None = None  # half the width of the candidate's interval of the metric (None: no interval)
    required: float | None = None  # the improvement asked for: the larger of the two


def half_width(metrics: dict, metric: str) -> float | None:
    """Half the width of `metric_low`..`metric_high` in an evaluation's metrics; None without an interval."""
    low, high = metrics.get(f"{metric}_low"), metrics.get(f"{metric}_high")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return None
    width = (float(high) - float(low)) / 2
    return width if math.isfinite(width) else None


def decide(candidate: float, champion: float | None, direction: str, min_improvement: float,
           interval_half_width: float | None = None, copy_fraction: float | None = None,
           max_copy_fraction: float | None = None) -> Decision:
    """Should the candidate replace the champion?

    It must beat the champion by more than max(min_improvement x |champion|, the half-width of its own
    interval of the metric): beyond the configured margin and beyond its own sampling uncertainty. Without an
    interval (evaluate.bootstrap 0) only the margin applies. A non-finite candidate, or one whose
    copy_fraction exceeds max_copy_fraction (it memorises its training data), is never promoted."""
    hw = interval_half_width
    if not math.isfinite(candidate):
        return Decision(False, f"candidate metric is {candidate}: never promoted", half_width=hw)
    margin = need = None
    if champion is None or not math.isfinite(champion):
        better, reason = True, "no comparable champion"
    else:
        margin = min_improvement * abs(champion)
        need = max(margin, hw) if hw is not None else margin
        if hw is None:
            basis = f"the margin {margin:.3g} (no interval: evaluate.bootstrap is 0)"
        elif hw > margin:
            basis = f"its interval's half-width {hw:.3g} (larger than the margin {margin:.3g})"
        else:
            basis = f"the margin {margin:.3g} (larger than its interval's half-width {hw:.3g})"
        better = candidate < champion - need if direction == "min" else candidate > champion + need
        word = "lower" if direction == "min" else "higher"
        reason = (f"{candidate:.6g} {'is' if better else 'is not'} {word} than champion {champion:.6g} by more "
                  f"than {need:.3g}, {basis}")
    if max_copy_fraction is not None and copy_fraction is not None and not copy_fraction <= max_copy_fraction:
        return Decision(False, f"copy_fraction {copy_fraction:.3g} exceeds register.max_copy_fraction "
                               f"{max_copy_fraction:.3g} (near-copies of training images): never promoted; "
                               f"{reason}", margin, hw, need)
    return Decision(better, reason, margin, hw, need)
