"""reports/FAMILY/train: the loss curve as a picture, and as a CSV `dvc plots` draws."""

from __future__ import annotations

from pathlib import Path

from genops.evaluation.history import write_history
from genops.evaluation.plots import save_loss_curve

LOSSES_CSV = "losses.csv"


def write_train_report(folder: Path, family_name: str, history: list[dict[str, float]], monitor_loss: str) -> Path:
    """loss_curve.png and losses.csv in `folder` (step on x; `loss` is the family's monitored loss, the one its
    stability is measured on, then every logged column); returns the picture."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"step": h["step"], "loss": h.get(monitor_loss, float("nan")),
             **{k: v for k, v in h.items() if k not in ("step", "loss")}} for h in history]
    write_history(folder / LOSSES_CSV, rows)
    return save_loss_curve(history, folder / "loss_curve.png", f"{family_name} training losses")
