"""Training stability read off the loss history: how noisy the end of training is, and how often the
loss spiked. GANs are expected to score worst here; likelihood models should be smooth."""

from __future__ import annotations

import numpy as np


def stability(history: list[dict[str, float]], key: str = "loss", window: int = 50, z: float = 6.0) -> dict:
    values = np.array([h[key] for h in history if key in h], dtype=float)
    if values.size < 4:
        return {"loss_cv_last_half": float("nan"), "loss_spikes": 0.0}
    tail = values[values.size // 2 :]
    cv = float(tail.std() / max(abs(tail.mean()), 1e-12))
    spikes = 0
    for i in range(window, values.size):
        past = values[i - window : i]
        med = np.median(past)
        mad = np.median(np.abs(past - med)) * 1.4826 + 1e-12
        spikes += int(values[i] > med + z * mad)
    return {"loss_cv_last_half": cv, "loss_spikes": float(spikes)}
