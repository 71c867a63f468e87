"""The forward process: beta schedules and the Gaussian algebra of q(x_t | x_0) and q(x_{t-1} | x_t, x_0)."""

from __future__ import annotations

import math

import torch


def linear_beta(T: int) -> torch.Tensor:
    """Ho et al.'s beta_1 = 1e-4 ... beta_T = 0.02 for T = 1000, scaled by 1000 / T (Nichol & Dhariwal) so
    alpha_bar_T stays near zero for shorter chains."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64).clamp(max=0.999)


def cosine_beta(T: int, s: float = 0.008) -> torch.Tensor:
    """alpha_bar(t) = cos^2(((t / T + s) / (1 + s)) pi / 2) / f(0); beta_t = 1 - alpha_bar_t / alpha_bar_{t-1},
    clipped at 0.999 to avoid the singularity at t = T."""
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def expand(coef: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """A per-image coefficient (shape [N]) as N x 1 x 1 x 1 in x's dtype; Python floats pass through."""
    if isinstance(coef, torch.Tensor):
        return coef.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return coef


def gaussian_posterior(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar_t, alpha_bar_s):
    """q(x_s | x_t, x_0) for any s < t: (mean, variance). With s = t - 1 this is Ho et al. eq. 6-7:
        mu~ = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
              + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
        beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    Coefficients may be floats or N x 1 x 1 x 1 tensors."""
    alpha_ts = alpha_bar_t / alpha_bar_s  # the one-jump "alpha" from s to t
    beta_ts = 1 - alpha_ts
    mean = (alpha_bar_s**0.5 * beta_ts / (1 - alpha_bar_t)) * x0 + (
        alpha_ts**0.5 * (1 - alpha_bar_s) / (1 - alpha_bar_t)) * x_t
    return mean, beta_ts * (1 - alpha_bar_s) / (1 - alpha_bar_t)


class NoiseSchedule:
    """beta_t and everything derived from it, in float64 (coefficients are cast to the data's dtype on use)."""

    def __init__(self, beta: torch.Tensor) -> None:
        self.T = int(beta.shape[0])
        self.beta = beta.double()
        self.alpha = 1 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.posterior_var = self.beta * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)  # beta~_t, 0 at t = 0
        # beta~_1 = 0 cannot be a decoder variance (log 0): use beta~_2 there, as Ho et al.'s code does.
        self.posterior_var_clipped = torch.cat([self.posterior_var[1:2], self.posterior_var[1:]])

    @classmethod
    def make(cls, kind: str, T: int) -> NoiseSchedule:
        """`kind` is linear or cosine (the config checks it)."""
        return cls(linear_beta(T) if kind == "linear" else cosine_beta(T))

    def at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """values[t] for a batch of timesteps (t on any device), float64 on CPU."""
        return values[t.cpu().long()]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: the whole forward chain in one jump."""
        alpha_bar = self.at(self.alpha_bar, t)
        return expand(alpha_bar.sqrt(), x0) * x0 + expand((1 - alpha_bar).sqrt(), x0) * eps

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) for a batch of timesteps t (variance as N x 1 x 1 x 1)."""
        alpha_bar_t = expand(self.at(self.alpha_bar, t), x0)
        alpha_bar_s = expand(self.at(self.alpha_bar_prev, t), x0)
        return gaussian_posterior(x0, x_t, alpha_bar_t, alpha_bar_s)

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        alpha_bar = self.at(self.alpha_bar, t)
        return expand(alpha_bar.sqrt(), x0) * eps - expand((1 - alpha_bar).sqrt(), x0) * x0


def x0_and_eps(out: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction: str,
               clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) from the network's prediction at x_t. With `clip`, x0_hat is clipped to the data
    range [-1, 1] and eps_hat recomputed from it, so both samplers step from the same, consistent pair."""
    a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction == "v":
        x0, eps = a * x_t - b * out, b * x_t + a * out
    else:
        x0, eps = (x_t - b * out) / a, out
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x_t - a * x0) / b
    return x0, eps
