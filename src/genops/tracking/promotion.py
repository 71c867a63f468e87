"""The promotion rule: a candidate replaces @champion only if its primary metric is better by a margin."""

from __future__ import annotations

import math


def decide(candidate: float, champion: float | None, direction: str, min_improvement: float) -> tuple[bool, str]:
    """Should the candidate replace the champion? Returns (promote, reason)."""
    if not math.isfinite(candidate):
        return False, f"candidate metric is {candidate}: never promoted"
    if champion is None or not math.isfinite(champion):
        return True, "no comparable champion"
    need = min_improvement * abs(champion)
    better = candidate < champion - need if direction == "min" else candidate > champion + need
    word = "lower" if direction == "min" else "higher"
    if better:
        return True, f"{candidate:.6g} is {word} than champion {champion:.6g} by more than {need:.3g}"
    return False, f"{candidate:.6g} is not {word} than champion {champion:.6g} by more than {need:.3g}"
