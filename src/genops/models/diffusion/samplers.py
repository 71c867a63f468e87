"""Reverse-process samplers, apart from any network (as diffusers' schedulers are).

A sampler is one function `step(x0, eps, x_t, alpha_bar_t, alpha_bar_s, eta) -> (mean, sigma)` from
timestep t to an earlier s: x_s = mean + sigma z. `run_chain` drives any of them over a respaced chain
with a `predict(x_t, t)` callable, which may wrap a torch module or an ONNX Runtime session. Adding a
sampler = one function here and a line in SAMPLERS (and its name in the config's `sample_method`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from genops.models.diffusion.schedules import NoiseSchedule, gaussian_posterior, x0_and_eps

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float, float], tuple[torch.Tensor, float]]


def ddim(x0: torch.Tensor, eps: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float,
         eta: float) -> tuple[torch.Tensor, float]:
    """DDIM (Song et al. 2021, eq. 12) from t to s < t: (mean, sigma) of x_s.
    sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s);
    x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z."""
    sigma = eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t)) ** 0.5 * (1 - alpha_bar_t / alpha_bar_s) ** 0.5
    return alpha_bar_s**0.5 * x0 + max(1 - alpha_bar_s - sigma**2, 0.0) ** 0.5 * eps, sigma


def ddpm(x0: torch.Tensor, eps: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float,
         eta: float) -> tuple[torch.Tensor, float]:
    """Ancestral step (Ho et al. Algorithm 2, sigma_t^2 = beta~_t) from t to s < t: (mean, sigma) of x_s.
    On a respaced chain this is the ancestral sampler of the respaced process; eta is not used."""
    mean, var = gaussian_posterior(x0, x_t, alpha_bar_t, alpha_bar_s)
    return mean, max(var, 0.0) ** 0.5


SAMPLERS: dict[str, Step] = {"ddim": ddim, "ddpm": ddpm}


def respaced_timesteps(T: int, steps: int) -> list[int]:
    """S timesteps evenly spread over T-1 ... 0, descending: the chain the sampler visits."""
    steps = max(1, min(int(steps), T))
    if steps == 1:
        return [T - 1]  # one jump from pure noise straight to x0_hat
    return sorted({round(i * (T - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


@torch.no_grad()
def run_chain(predict: Callable[[torch.Tensor, int], torch.Tensor], x_T: torch.Tensor, schedule: NoiseSchedule,
              seq: list[int], step: Step, eta: float, prediction: str, clip: bool, generator: torch.Generator,
              progress: bool = False, desc: str = "sample") -> torch.Tensor:
    """x_T -> x_0 along `seq` (descending timesteps). Noise is drawn only where sigma > 0, which depends on
    the schedule alone, so every backend consumes `generator` identically."""
    x = x_T
    for i, t in enumerate(tqdm(seq, desc=desc, disable=not progress, leave=False, mininterval=1.0,
                               dynamic_ncols=True)):
        alpha_bar_t = float(schedule.alpha_bar[t])
        alpha_bar_s = float(schedule.alpha_bar[seq[i + 1]]) if i + 1 < len(seq) else 1.0
        out = predict(x, t).float()
        x0, eps = x0_and_eps(out, x, alpha_bar_t, prediction, clip)
        mean, sigma = step(x0, eps, x, alpha_bar_t, alpha_bar_s, eta)
        x = mean + sigma * torch.randn(x.shape, generator=generator).to(x.device) if sigma > 0 else mean
    return x


@torch.no_grad()
def run_inpaint_chain(predict: Callable[[torch.Tensor, int], torch.Tensor], x_T: torch.Tensor, known: torch.Tensor,
                      mask: torch.Tensor, schedule: NoiseSchedule, seq: list[int], step: Step, eta: float,
                      prediction: str, clip: bool, generator: torch.Generator, resample: int = 1,
                      progress: bool = False, desc: str = "inpaint") -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022) with an unconditional model: x_T -> x_0 along `seq`, where before every
    network call the known pixels (mask 1) are replaced by `known` noised to the current timestep,
    x_t = m * q(x_t | known) + (1 - m) * x_t, so the generated part stays consistent with what is kept.
    With `resample` U > 1 each step is repeated U times, re-noising x_s back to t in between
    (x_t ~ N(sqrt(a_t / a_s) x_s, (1 - a_t / a_s) I)): the harmonisation that lets the unknown region follow
    the known one instead of only being pasted next to it. Noise comes from `generator` in a fixed order."""
    x = x_T
    resample = max(1, int(resample))
    for i, t in enumerate(tqdm(seq, desc=desc, disable=not progress, leave=False, mininterval=1.0,
                               dynamic_ncols=True)):
        alpha_bar_t = float(schedule.alpha_bar[t])
        alpha_bar_s = float(schedule.alpha_bar[seq[i + 1]]) if i + 1 < len(seq) else 1.0
        passes = resample if i + 1 < len(seq) else 1  # the last step lands on x_0: nothing to re-noise
        for u in range(passes):
            noise = torch.randn(known.shape, generator=generator).to(known.device)
            x = mask * (alpha_bar_t**0.5 * known + (1 - alpha_bar_t) ** 0.5 * noise) + (1 - mask) * x
            x0, eps = x0_and_eps(predict(x, t).float(), x, alpha_bar_t, prediction, clip)
            mean, sigma = step(x0, eps, x, alpha_bar_t, alpha_bar_s, eta)
            x = mean + sigma * torch.randn(x.shape, generator=generator).to(x.device) if sigma > 0 else mean
            if u + 1 < passes:  # back to t for another pass of this step
                ratio = alpha_bar_t / alpha_bar_s
                x = ratio**0.5 * x + (1 - ratio) ** 0.5 * torch.randn(x.shape, generator=generator).to(x.device)
    return mask * known + (1 - mask) * x
