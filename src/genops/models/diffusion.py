"""Denoising diffusion probabilistic model (Ho et al. 2020) with DDIM sampling and classifier-free guidance.

Forward process, fixed (t = 1..T in the paper; t = 0..T-1 in code, so code t is the paper's t + 1):
    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),   alpha_bar_t = prod_{s<=t} (1 - beta_s)
    q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)                 (Bayes on the two Gaussians above)
Reverse process, learned: p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat(x_t, t)), beta~_t I), where the U-Net predicts
    eps  ("L_simple" = E ||eps - eps_theta(x_t, t)||^2), or
    v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0   (Salimans & Ho 2022),
and x0_hat / eps_hat follow from the prediction and x_t in closed form. Schedules: linear beta (Ho et al.,
rescaled by 1000 / T so short chains still end near N(0, I)) or cosine alpha_bar (Nichol & Dhariwal 2021).

Samplers live outside the network, which only maps (x_t, t[, label]) -> prediction, so an ONNX Runtime
session can stand in for it: ancestral DDPM (sigma_t^2 = beta~_t) and DDIM (Song et al. 2021) on a
sub-sequence of S timesteps with stochasticity eta (eta = 0 deterministic, eta = 1 equals DDPM on the
respaced chain). All sampling noise comes from the caller's CPU generator, in a fixed order.

Classifier-free guidance (Ho & Salimans 2021): the label embedding has an extra learned "null" class
(index num_classes); labels are dropped to it with probability p_uncond while training, and sampling uses
    eps_tilde = eps_uncond + w * (eps_cond - eps_uncond)
so w = 0 is the unconditional model, w = 1 the plain conditional one, w > 1 guided. The same linear rule is
applied to v-predictions, which is identical (eps is affine in v for a given x_t).

Data live in [-1, 1] inside the family; public images are in [0, 1] like every family. Sampling and
export use an exponential moving average (EMA) of the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.base import ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.layers import level_sizes
from genops.models.likelihoods import nats_to_bits_per_dim

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
METHODS = ("ddim", "ddpm")


# --- noise schedule and the Gaussian algebra of the forward process ---------------------------------


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


def _expand(coef: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
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


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float, eta: float):
    """DDIM (Song et al. 2021, eq. 12) from t to s < t: (mean, sigma) of x_s.
    sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s);
    x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z."""
    sigma = eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t)) ** 0.5 * (1 - alpha_bar_t / alpha_bar_s) ** 0.5
    return alpha_bar_s**0.5 * x0 + max(1 - alpha_bar_s - sigma**2, 0.0) ** 0.5 * eps, sigma


def ddpm_step(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float):
    """Ancestral step (Ho et al. Algorithm 2, sigma_t^2 = beta~_t) from t to s < t: (mean, sigma) of x_s."""
    mean, var = gaussian_posterior(x0, x_t, alpha_bar_t, alpha_bar_s)
    return mean, max(var, 0.0) ** 0.5


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
        if kind not in SCHEDULES:
            raise GenopsError(f"diffusion.schedule={kind!r}: expected one of {', '.join(SCHEDULES)}")
        return cls(linear_beta(T) if kind == "linear" else cosine_beta(T))

    def at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """values[t] for a batch of timesteps (t on any device), float64 on CPU."""
        return values[t.cpu().long()]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: the whole forward chain in one jump."""
        alpha_bar = self.at(self.alpha_bar, t)
        return _expand(alpha_bar.sqrt(), x0) * x0 + _expand((1 - alpha_bar).sqrt(), x0) * eps

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) for a batch of timesteps t (variance as N x 1 x 1 x 1)."""
        alpha_bar_t = _expand(self.at(self.alpha_bar, t), x0)
        alpha_bar_s = _expand(self.at(self.alpha_bar_prev, t), x0)
        return gaussian_posterior(x0, x_t, alpha_bar_t, alpha_bar_s)

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        alpha_bar = self.at(self.alpha_bar, t)
        return _expand(alpha_bar.sqrt(), x0) * eps - _expand((1 - alpha_bar).sqrt(), x0) * x0


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


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per value for x in {-1, -1 + 2/255, ..., 1} under N(mean, exp(log_scale)^2) binned to 256 values
    (Ho et al.'s L_0): bins are 2/255 wide and the edge bins absorb the tails, so the masses sum to one."""
    half = 1.0 / 255.0
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (x - mean + half), inv_s * (x - mean - half)
    log_cdf_plus = torch.special.log_ndtr(plus)  # the x = -1 bin: (-inf, -1 + 1/255]
    log_one_minus_cdf_minus = torch.special.log_ndtr(-minus)  # the x = 1 bin: [1 - 1/255, inf)
    # Far in a tail both CDFs round to the same value: take the mass from the side where it is resolvable.
    delta = torch.where(minus > 0, torch.special.ndtr(-minus) - torch.special.ndtr(-plus),
                        torch.special.ndtr(plus) - torch.special.ndtr(minus))
    mid = inv_s * (x - mean)
    log_pdf_mid = -0.5 * mid**2 - 0.5 * math.log(2 * math.pi) - log_scale + math.log(2 * half)
    log_mid = torch.where(delta > 1e-12, torch.log(delta.clamp(min=1e-30)), log_pdf_mid)
    return torch.where(x < -1 + half, log_cdf_plus, torch.where(x > 1 - half, log_one_minus_cdf_minus, log_mid))


# --- the denoiser: a U-Net over (x_t, t[, label]) ----------------------------------------------------


def _groups(channels: int) -> int:
    """GroupNorm groups of at least 4 channels (at most 32 groups): with one channel per group the norm would
    be an instance norm, which removes any per-channel offset and with it a conditioning signal."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= min(4, channels))


class SinusoidalEmbedding(nn.Module):
    """t -> [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / half): the Transformer position code for timesteps."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # a constant, not a weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time(+label) embedding in between, and a residual connection.

    The embedding enters as a scale and shift of the second GroupNorm's output, norm(h) (1 + scale) + shift
    (Nichol & Dhariwal 2021), rather than Ho et al.'s addition before it: a per-channel offset added before a
    GroupNorm is largely subtracted again by it in the narrow networks used here.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a feature map (used where maps are small)."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim) if channels % head_dim == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w).unbind(1)
        # Plain softmax(q^T k / sqrt(d)) v: on CPU it is faster than SDPA's masked fallback and exports simply.
        weights = torch.softmax(q.transpose(-1, -2) @ k * d**-0.5, dim=-1)  # N x heads x HW x HW
        a = v @ weights.transpose(-1, -2)  # N x heads x d x HW
        return x + self.out(a.reshape(n, c, h, w))


class Level(nn.Module):
    """The residual blocks (each optionally followed by attention) of one resolution."""

    def __init__(self, blocks: list[ResBlock], attention: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList([SelfAttention(b.conv2.out_channels) if attention else nn.Identity()
                                   for b in blocks])


def conditioning(net: nn.Module, t: torch.Tensor, label: torch.Tensor | None, x_t: torch.Tensor) -> torch.Tensor:
    """A denoiser's time embedding plus its label embedding (the null label when none is given, so an
    unlabeled call is the unconditional prediction). `net` has time_embed, label_embed and num_classes."""
    emb = net.time_embed(t)
    if net.label_embed is not None:
        if label is None:
            label = torch.full((x_t.shape[0],), net.num_classes, dtype=torch.long, device=x_t.device)
        emb = emb + net.label_embed(label)
    return emb


class UNet(nn.Module):
    """(x_t, t[, label]) -> eps or v prediction, same shape as x_t. t is a float or int tensor of shape [N].

    Ho et al.'s layout, sized for small images of any shape: per level `blocks` residual blocks (skip
    saved after each) and a stride-2 conv down; a middle of res-attention-res; the way up concatenates
    the saved skips and resizes to the exact saved size (28 -> 14 -> 7 -> 14 -> 28, 20 x 36 -> 10 x 18).
    """

    def __init__(self, spec: DataSpec, widths: list[int], blocks: int, attention_levels: list[int],
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        sizes = level_sizes(spec.height, spec.width, len(widths) - 1)
        widths = widths[: len(sizes)]
        n_levels = len(widths)
        attn = {lvl % n_levels for lvl in attention_levels}  # negative indices count from the lowest resolution
        emb_dim = 4 * widths[0]
        self.time_embed = nn.Sequential(SinusoidalEmbedding(widths[0]), nn.Linear(widths[0], emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        # num_classes + 1 rows: the last is the learned "null" label of classifier-free guidance.
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.num_classes = num_classes
        self.conv_in = nn.Conv2d(spec.channels, widths[0], 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for i, w in enumerate(widths):
            res = []
            for _ in range(blocks):
                res.append(ResBlock(c, w, emb_dim, dropout))
                c = w
                skips.append(c)
            self.down.append(Level(res, i in attn))
            if i < n_levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1, self.mid_attn = ResBlock(c, c, emb_dim, dropout), SelfAttention(c)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(n_levels)):
            res = []
            for _ in range(blocks + 1):
                res.append(ResBlock(c + skips.pop(), widths[i], emb_dim, dropout))
                c = widths[i]
            self.up.append(Level(res, i in attn))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, spec.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # predict zero at first: L_simple starts at E||eps||^2 = 1
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        emb = conditioning(self, t, label, x_t)
        h = self.conv_in(x_t)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def _ema_fn(decay: float, warmup: bool) -> Callable:
    """AveragedModel's multi_avg_fn: torch's EMA with `decay`, optionally ramped up as min(decay, (1+n)/(10+n))
    so short runs are not dominated by the first weights."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    def update(ema_params, params, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, n_averaged)

    return update


def vlb_strata(T: int, K: int) -> list[int]:
    """Edges of K contiguous strata covering t = 1 .. T-1, geometrically wider with t: L_t is large and changes
    fast at small t (each of the first few t gets its own stratum) and is small and smooth later, so one draw
    per stratum, weighted by its width, is an unbiased and low-variance estimate of sum_t L_t."""
    K = max(1, min(K, T - 1))
    geo = torch.logspace(0, math.log10(T), K + 1, dtype=torch.float64).tolist()
    edges = [1]
    for i in range(1, K):
        edges.append(min(max(round(geo[i]), edges[-1] + 1), T - (K - i)))
    return [*edges, T]


# --- the family ------------------------------------------------------------------------------------


class Diffusion(Family):
    name = "diffusion"
    info = FamilyInfo(
        summary="DDPM (Ho et al. 2020): U-Net predicting eps or v under a linear/cosine beta schedule, "
                "EMA weights, DDIM and ancestral samplers, classifier-free guidance when conditional.",
        samples_by="denoising x_T ~ N(0, I) step by step with the EMA U-Net: DDIM (S steps, eta) by default, "
                   "ancestral DDPM over all T steps as a variant; the loop runs outside the network",
        limits=["sampling costs one network pass per step (two with guidance w not in {0, 1}): orders of "
                "magnitude slower than a one-pass GAN or VAE", "the NLL is a variational upper bound, estimated "
                "on a stratified subset of timesteps", "guided samples (w != 1) are not draws from the "
                "likelihood-trained model; the NLL is for w = 1", "needs many more training steps than the "
                "other families before samples look right; EMA weights lag the raw ones early in training"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss"
    sample_options = ("steps", "method", "eta", "guidance")

    def __init__(self, cfg: dict, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.T = int(cfg.get("timesteps", 1000))
        if self.T < 2:
            raise GenopsError(f"{self.name}.timesteps={self.T}: need at least 2")
        self.schedule = NoiseSchedule.make(str(cfg.get("schedule", "linear")), self.T)
        self.prediction = str(cfg.get("prediction", "eps"))
        if self.prediction not in PREDICTIONS:
            raise GenopsError(f"{self.name}.prediction={self.prediction!r}: expected one of {', '.join(PREDICTIONS)}")
        self.p_uncond = float(cfg.get("p_uncond", 0.1))
        self.sample_steps = int(cfg.get("sample_steps", 50))
        self.sample_method = str(cfg.get("sample_method", "ddim"))
        if self.sample_method not in METHODS:
            raise GenopsError(f"{self.name}.sample_method={self.sample_method!r}: expected one of {', '.join(METHODS)}")
        self.eta = float(cfg.get("eta", 0.0))
        self.guidance = float(cfg.get("guidance", 1.0))
        self.clip_denoised = bool(cfg.get("clip_denoised", True))
        self.grad_clip = float(cfg.get("grad_clip", 1.0))
        self.warmup_steps = int(cfg.get("warmup_steps", 0))
        self.num_classes = spec.num_classes if self.conditional else 0
        self.x_shape: tuple[int, ...] = spec.shape  # the shape of what is diffused (a latent for latent diffusion)
        self.net = self.build_denoiser()
        self.ema = AveragedModel(self.net, multi_avg_fn=_ema_fn(float(cfg.get("ema_decay", 0.999)),
                                                                 bool(cfg.get("ema_warmup", False))))
        self._base_lr: float | None = None

    def build_denoiser(self) -> nn.Module:
        """The network (x_t, t[, label]) -> prediction; a U-Net over images here."""
        return UNet(self.spec, [int(w) for w in self.cfg.get("widths", [32, 64])],
                    int(self.cfg.get("blocks_per_level", 1)),
                    [int(a) for a in self.cfg.get("attention_levels", [-1])], self.num_classes,
                    float(self.cfg.get("dropout", 0.0)))

    def to_diffusion_space(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """What the forward process noises: pixels rescaled to [-1, 1] here."""
        return batch.x * 2 - 1

    def from_diffusion_space(self, x0: torch.Tensor, nets: Mapping[str, Net] | None = None) -> torch.Tensor:
        """Denoised x_0 -> images in [0, 1]."""
        return ((x0 + 1) / 2).clamp(0, 1)

    # --- training --------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"denoiser": self.net, "ema": self.ema}

    def num_parameters(self) -> int:
        """The denoiser's parameters only: the EMA is a shadow copy of the same network."""
        return sum(p.numel() for p in self.net.parameters())

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        self._base_lr = float(self.cfg.get("lr", lr))
        return {"denoiser": torch.optim.Adam(self.net.parameters(), lr=self._base_lr)}

    def _train_labels(self, batch: Batch, generator: torch.Generator) -> torch.Tensor | None:
        """Labels with a p_uncond fraction replaced by the null label, so one net learns both eps(x|y) and eps(x)."""
        if not self.conditional:
            return None
        drop = (torch.rand(batch.y.shape[0], generator=generator) < self.p_uncond).to(batch.y.device)
        return torch.where(drop, torch.full_like(batch.y, self.num_classes), batch.y)

    def loss(self, batch: Batch, generator: torch.Generator, autocast=None) -> torch.Tensor:
        """L_simple: E_{t, eps} ||target - net(x_t, t)||^2 with target eps (or v), t uniform over 0..T-1."""
        x0 = self.to_diffusion_space(batch, generator)
        n = x0.shape[0]
        t = torch.randint(0, self.T, (n,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        y = self._train_labels(batch, generator)
        x_t = self.schedule.q_sample(x0, t, eps)
        target = eps if self.prediction == "eps" else self.schedule.v_target(x0, t, eps)
        with (autocast or contextlib.nullcontext)():
            out = self.net(x_t, t.to(x0.device, torch.float32), y)
        return F.mse_loss(out.float(), target)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        opt = ctx.optimizers["denoiser"]
        if self.warmup_steps and self._base_lr is not None:  # linear learning-rate warm-up (Ho et al.: 5000)
            for group in opt.param_groups:
                group["lr"] = self._base_lr * min(1.0, (ctx.step + 1) / self.warmup_steps)
        loss = self.loss(batch, ctx.generator, ctx.autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip if self.grad_clip > 0 else
                                              float("inf"))
        opt.step()
        self.ema.update_parameters(self.net)
        return {"loss": loss.item(), "grad_norm": float(grad)}

    def flops_per_image(self) -> float:
        """FLOPs of one training step per image: 3x a counted forward pass (backward is about twice forward)."""
        from torch.utils.flop_counter import FlopCounterMode

        n = 2
        x = torch.zeros(n, *self.x_shape, device=self.device)
        t = torch.zeros(n, device=self.device)
        y = torch.zeros(n, dtype=torch.long, device=self.device) if self.conditional else None
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            self.net(x, t, y)
        return 3.0 * counter.get_total_flops() / n

    # --- sampling --------------------------------------------------------------------------------
    def sampling_nets(self) -> dict[str, Net]:
        return {"denoiser": self.ema.module}

    def timesteps(self, steps: int) -> list[int]:
        """S timesteps evenly spread over T-1 ... 0, descending: the chain the sampler visits."""
        steps = max(1, min(int(steps), self.T))
        if steps == 1:
            return [self.T - 1]  # one jump from pure noise straight to x0_hat
        return sorted({round(i * (self.T - 1) / (steps - 1)) for i in range(steps)}, reverse=True)

    def sample_variants(self) -> dict[str, dict]:
        """DDIM at each of cfg eval_steps (default 10, 25, 50, 100) and full ancestral DDPM (T steps)."""
        out: dict[str, dict] = {}
        if bool(self.cfg.get("eval_ddpm", True)):
            out["ddpm"] = {"method": "ddpm", "steps": self.T}
        for s in self.cfg.get("eval_steps", [10, 25, 50, 100]):
            if int(s) < self.T:
                out[f"ddim{int(s)}"] = {"method": "ddim", "steps": int(s)}
        return out

    def _predict(self, net: Net, x: torch.Tensor, t: int, labels: torch.Tensor | None, w: float) -> torch.Tensor:
        """The (guided) network output at x_t: eps_uncond + w (eps_cond - eps_uncond), in one doubled batch."""
        n = x.shape[0]
        tt = torch.full((n,), float(t), device=x.device)
        if labels is None:
            return net(x, tt).to(x.device)
        null = torch.full_like(labels, self.num_classes)
        if w == 1.0:
            return net(x, tt, labels).to(x.device)
        if w == 0.0:
            return net(x, tt, null).to(x.device)
        both = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).to(x.device)
        cond, uncond = both[:n], both[n:]
        return uncond + w * (cond - uncond)

    @torch.no_grad()
    def denoise(self, x_T: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
                nets: Mapping[str, Net] | None = None, steps: int | None = None, method: str | None = None,
                eta: float | None = None, guidance: float | None = None, progress: bool | None = None) -> torch.Tensor:
        """The reverse process from a given x_T (in [-1, 1] space) to x_0; per-step noise from `generator`."""
        from tqdm.auto import tqdm

        net = (nets or self.sampling_nets())["denoiser"]
        method = method or self.sample_method
        if method not in METHODS:
            raise GenopsError(f"{self.name}: sampling method {method!r}: expected one of {', '.join(METHODS)}")
        eta = self.eta if eta is None else float(eta)
        w = self.guidance if guidance is None else float(guidance)
        if steps is not None and not 1 <= int(steps) <= self.T:
            raise GenopsError(f"{self.name}: steps={steps}: expected 1..{self.T} (the model's timesteps T)")
        if eta < 0:
            raise GenopsError(f"{self.name}: eta={eta}: expected >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
        seq = self.timesteps(self.sample_steps if steps is None else steps)
        if self.conditional:
            labels = (labels if labels is not None else self.default_labels(x_T.shape[0])).to(x_T.device)
        else:
            labels = None
        show = len(seq) >= 20 if progress is None else bool(progress)
        x = x_T
        for i, t in enumerate(tqdm(seq, desc=f"sample {self.name} ({method})", disable=not show, leave=False,
                                   mininterval=1.0, dynamic_ncols=True)):
            alpha_bar_t = float(self.schedule.alpha_bar[t])
            alpha_bar_s = float(self.schedule.alpha_bar[seq[i + 1]]) if i + 1 < len(seq) else 1.0
            out = self._predict(net, x, t, labels, w).float()
            x0, eps = x0_and_eps(out, x, alpha_bar_t, self.prediction, self.clip_denoised)
            if method == "ddim":
                mean, sigma = ddim_step(x0, eps, alpha_bar_t, alpha_bar_s, eta)
            else:
                mean, sigma = ddpm_step(x0, x, alpha_bar_t, alpha_bar_s)
            # Noise is drawn only where sigma > 0, which depends on the schedule alone, so every backend
            # consumes the generator identically.
            x = mean + sigma * torch.randn(x.shape, generator=generator).to(x.device) if sigma > 0 else mean
        return x

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        """n images in [0, 1]. kwargs: steps (default cfg sample_steps), method ("ddim" | "ddpm"; ddpm with
        steps < T runs the ancestral chain respaced to those steps), eta (DDIM only), guidance (w in
        eps_uncond + w (eps_cond - eps_uncond); 0 = unconditional, 1 = plain conditional), progress (None: a
        bar when steps >= 20). x_T first, then each step's noise, all from `generator`."""
        x_T = torch.randn(n, *self.x_shape, generator=generator).to(self.device)
        x0 = self.denoise(x_T, generator, labels, nets, **kwargs)
        return self.from_diffusion_space(x0, nets)

    # --- export, evaluation ------------------------------------------------------------------------
    def export_specs(self) -> list[ExportSpec]:
        x_t = torch.randn(2, *self.x_shape, device=self.device)
        t = torch.tensor([self.T - 1.0, 0.0], device=self.device)
        if self.conditional:
            label = torch.tensor([0, self.num_classes], dtype=torch.long, device=self.device)
            return [ExportSpec("denoiser", self.ema.module, (x_t, t, label), ["x_t", "t", "label"], ["prediction"])]
        return [ExportSpec("denoiser", self.ema.module, (x_t, t), ["x_t", "t"], ["prediction"])]

    def _vlb_terms(self, net: nn.Module, x0: torch.Tensor, y: torch.Tensor | None, K: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Per image, in nats: L_T (prior), L_0 (discrete decoder), an unbiased stratified estimate of
        sum_{t=1}^{T-1} L_t (one random t per stratum, weighted by stratum size), and the L_simple loss."""
        n, dev, sched = x0.shape[0], x0.device, self.schedule

        def model_x0(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(x0_hat, raw network output) at x_t."""
            out = net(x_t, t.to(dev, torch.float32), y).float()
            return x0_and_eps(out, x_t, _expand(sched.at(sched.alpha_bar, t), x_t), self.prediction,
                              self.clip_denoised)[0], out

        # L_T = KL(q(x_T | x_0) || N(0, I)): fixed by the schedule, no network.
        ab_T = float(sched.alpha_bar[-1])
        prior = 0.5 * (ab_T * x0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))
        # L_0 = -log p(x_0 | x_1), a discretised Gaussian around the model's posterior mean.
        t0 = torch.zeros(n, dtype=torch.long)
        x_1 = sched.q_sample(x0, t0, torch.randn(x0.shape, generator=generator).to(dev))
        mean0, _ = sched.q_posterior(model_x0(x_1, t0)[0], x_1, t0)
        log_scale0 = 0.5 * math.log(float(sched.posterior_var_clipped[0]))
        l0 = -discretized_gaussian_log_prob(x0, mean0, torch.full_like(mean0, log_scale0))
        # L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = ||mu~ - mu_theta||^2 / (2 beta~_t): equal variances.
        bounds = vlb_strata(self.T, K)
        middle, simple = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            t = torch.randint(lo, hi, (n,), generator=generator)
            eps = torch.randn(x0.shape, generator=generator).to(dev)
            x_t = sched.q_sample(x0, t, eps)
            x0_hat, out = model_x0(x_t, t)
            mu, var = sched.q_posterior(x0, x_t, t)
            mu_theta, _ = sched.q_posterior(x0_hat, x_t, t)
            middle += (hi - lo) * ((mu - mu_theta) ** 2 / (2 * var)).flatten(1).sum(1)
            target = eps if self.prediction == "eps" else sched.v_target(x0, t, eps)
            simple += (hi - lo) / (self.T - 1) * (out - target).pow(2).flatten(1).mean(1)
        return prior.flatten(1).sum(1), l0.flatten(1).sum(1), middle, simple

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator) -> dict[str, float]:
        """The variational bound -log p(x) <= L_T + sum L_t + L_0 in bits/dim on `nll_subset` test images
        (pixels as 256 discrete values), with the sum over t estimated from `vlb_timesteps` strata."""
        K = max(1, min(int(self.cfg.get("vlb_timesteps", cfg.get("vlb_timesteps", 32))), self.T - 1))
        subset = test.head(int(cfg.get("nll_subset", len(test))))
        net = self.ema.module
        totals = torch.zeros(4, dtype=torch.float64)
        count = 0
        for batch in subset.to(self.device).batches(int(cfg.get("batch_size", 256))):
            y = batch.y if self.conditional else None
            terms = self._vlb_terms(net, batch.x * 2 - 1, y, K, generator)
            totals += torch.stack([v.double().sum().cpu() for v in terms])
            count += batch.x.shape[0]
        prior, l0, middle, simple = (totals / max(count, 1)).tolist()
        bpd = nats_to_bits_per_dim(prior + l0 + middle, self.spec.dims)
        return {"test_vlb_bpd": bpd, "test_nll_bpd": bpd,
                "test_prior_bpd": nats_to_bits_per_dim(prior, self.spec.dims),
                "test_l0_bpd": nats_to_bits_per_dim(l0, self.spec.dims),
                "test_diffusion_bpd": nats_to_bits_per_dim(middle, self.spec.dims),
                "test_loss": simple, "vlb_timesteps": float(K), "nll_images": float(count)}

    @torch.no_grad()
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        """Spherical interpolation between two seeded x_T per pair, each decoded by deterministic DDIM (eta = 0)."""
        gen = torch.Generator().manual_seed(0)
        n = a.x.shape[0]
        za = torch.randn(n, *self.x_shape, generator=gen).flatten(1)
        zb = torch.randn(n, *self.x_shape, generator=gen).flatten(1)
        omega = torch.acos((F.normalize(za, dim=1) * F.normalize(zb, dim=1)).sum(1).clamp(-1, 1))[:, None]
        rows = [(torch.sin((1 - s) * omega) * za + torch.sin(s * omega) * zb) / torch.sin(omega).clamp_min(1e-6)
                for s in torch.linspace(0, 1, steps).tolist()]
        x_T = torch.stack(rows, dim=1).reshape(n * steps, *self.x_shape).to(self.device)
        labels = a.y.repeat_interleave(steps).to(self.device) if self.conditional else None
        x0 = self.denoise(x_T, gen, labels, method="ddim", eta=0.0, guidance=self.guidance)
        return self.from_diffusion_space(x0)
