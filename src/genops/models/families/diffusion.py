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

Schedules (genops.models.diffusion.schedules), samplers (.samplers), EMA (.ema) and the variational bound
(.vlb) live apart from the U-Net (genops.models.networks.unet). Samplers live outside the network, which only
maps (x_t, t[, label]) -> prediction, so an ONNX Runtime session can stand in for it: ancestral DDPM
(sigma_t^2 = beta~_t) and DDIM (Song et al. 2021) on a sub-sequence of S timesteps with stochasticity eta (eta
= 0 deterministic, eta = 1 equals DDPM on the respaced chain). All sampling noise comes from the caller's CPU
generator, in a fixed order.

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
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from genops.config.families import DiffusionConfig, DiffusionProcessConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import Inpaints, InterpolatesNoise, OwnMetrics, SampleVariants
from genops.models.diffusion.ema import ema_avg_fn
from genops.models.diffusion.samplers import SAMPLERS, respaced_timesteps, run_chain, run_inpaint_chain
from genops.models.diffusion.schedules import NoiseSchedule
from genops.models.diffusion.vlb import vlb_terms
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.latent_paths import slerp
from genops.models.likelihoods import nats_to_bits_per_dim
from genops.models.networks.unet import UNet
from genops.models.sharding import BatchNoise, batch_noise


class DenoisingDiffusion(Family, SampleVariants, OwnMetrics, InterpolatesNoise):
    """What pixel and latent diffusion share: the schedule, the denoiser's training, the samplers, the bound."""


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

    cfg: DiffusionProcessConfig

    def __init__(self, cfg: DiffusionProcessConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.T = cfg.timesteps
        self.schedule = NoiseSchedule.make(cfg.schedule, self.T)
        self.prediction = cfg.prediction
        self.p_uncond = cfg.p_uncond
        self.grad_clip = cfg.grad_clip
        self.warmup_steps = cfg.warmup_steps
        self.num_classes = spec.num_classes if self.conditional else 0
        self.x_shape: tuple[int, ...] = spec.shape  # the shape of what is diffused (a latent for latent diffusion)
        self.net = self.build_denoiser()
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_avg_fn(cfg.ema_decay, cfg.ema_warmup))
        self._base_lr: float | None = None

    def build_denoiser(self) -> nn.Module:
        """The network (x_t, t[, label]) -> prediction; a U-Net over images here."""
        cfg = self.cfg
        assert isinstance(cfg, DiffusionConfig)
        return UNet(self.spec, list(cfg.widths), cfg.depth, list(cfg.attention_levels), self.num_classes,
                    cfg.dropout)

    def to_diffusion_space(self, batch: Batch, noise: BatchNoise | torch.Generator) -> torch.Tensor:
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
        self._base_lr = lr
        return {"denoiser": torch.optim.Adam(self.net.parameters(), lr=self._base_lr)}

    def _train_labels(self, batch: Batch, noise: BatchNoise) -> torch.Tensor | None:
        """Labels with a p_uncond fraction replaced by the null label, so one net learns both eps(x|y) and eps(x)."""
        if not self.conditional:
            return None
        drop = (noise.rand(batch.y.shape[0]) < self.p_uncond).to(batch.y.device)
        return torch.where(drop, torch.full_like(batch.y, self.num_classes), batch.y)

    def loss(self, batch: Batch, noise: BatchNoise | torch.Generator, autocast=None) -> torch.Tensor:
        """L_simple: E_{t, eps} ||target - net(x_t, t)||^2 with target eps (or v), t uniform over 0..T-1."""
        noise = batch_noise(noise)
        x0 = self.to_diffusion_space(batch, noise)
        n = x0.shape[0]
        t = noise.randint(self.T, n)
        eps = noise.randn(*x0.shape).to(x0.device)
        y = self._train_labels(batch, noise)
        x_t = self.schedule.q_sample(x0, t, eps)
        target = eps if self.prediction == "eps" else self.schedule.v_target(x0, t, eps)
        with (autocast or contextlib.nullcontext)():
            out = self.net(x_t, t.to(x0.device, torch.float32), y)
        gamma = self.cfg.min_snr_gamma
        if not gamma:
            return F.mse_loss(out.float(), target)
        # Min-SNR-gamma (Hang et al. 2023): per-timestep weights that treat denoising as a multi-task problem.
        snr = self.schedule.at(self.schedule.alpha_bar / (1 - self.schedule.alpha_bar), t).to(x0.device).float()
        weight = snr.clamp(max=gamma) / (snr if self.prediction == "eps" else snr + 1)
        per_sample = (out.float() - target).pow(2).flatten(1).mean(1)
        return (weight * per_sample).mean()

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        opt = ctx.optimizers["denoiser"]
        if self.warmup_steps and self._base_lr is not None:  # linear learning-rate warm-up (Ho et al.: 5000)
            for group in opt.param_groups:
                group["lr"] = self._base_lr * min(1.0, (ctx.step + 1) / self.warmup_steps)
        loss = self.loss(batch, ctx.noise, ctx.autocast)
        ctx.backward("denoiser", loss)
        grad = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip if self.grad_clip > 0 else
                                              float("inf"))
        opt.step()
        self.ema.update_parameters(self.net)
        return {"loss": loss.detach(), "grad_norm": grad.detach()}

    # --- sampling --------------------------------------------------------------------------------
    def sampling_nets(self) -> dict[str, Net]:
        return {"denoiser": self.ema.module}

    def timesteps(self, steps: int) -> list[int]:
        """S timesteps evenly spread over T-1 ... 0, descending: the chain the sampler visits."""
        return respaced_timesteps(self.T, steps)

    def sampling_passes(self, steps: int | None = None, guidance: float | None = None, **options) -> int:
        """One denoiser pass per step, two with classifier-free guidance (w not in {0, 1}: a doubled batch)."""
        w = self.cfg.guidance if guidance is None else float(guidance)
        guided = self.conditional and w not in (0.0, 1.0)
        return len(self.timesteps(self.cfg.sample_steps if steps is None else int(steps))) * (2 if guided else 1)

    def sample_variants(self) -> dict[str, dict]:
        """DDIM at each of cfg eval_steps (default 10, 25, 50, 100) and full ancestral DDPM (T steps)."""
        out: dict[str, dict] = {}
        if self.cfg.eval_ddpm:
            out["ddpm"] = {"method": "ddpm", "steps": self.T}
        for s in self.cfg.eval_steps:
            out[f"ddim{s}"] = {"method": "ddim", "steps": s}
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
        cfg = self.cfg
        net = (nets or self.sampling_nets())["denoiser"]
        method = method or cfg.sample_method
        if method not in SAMPLERS:
            raise GenopsError(f"{self.name}: sampling method {method!r}: expected one of {', '.join(SAMPLERS)}")
        eta = cfg.eta if eta is None else float(eta)
        w = cfg.guidance if guidance is None else float(guidance)
        if steps is not None and not 1 <= int(steps) <= self.T:
            raise GenopsError(f"{self.name}: steps={steps}: expected 1..{self.T} (the model's timesteps T)")
        if eta < 0:
            raise GenopsError(f"{self.name}: eta={eta}: expected >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
        seq = self.timesteps(cfg.sample_steps if steps is None else steps)
        labels = self.sampling_labels(x_T.shape[0], labels).to(x_T.device) if self.conditional else None
        show = len(seq) >= 20 if progress is None else bool(progress)
        return run_chain(lambda x, t: self._predict(net, x, t, labels, w), x_T, self.schedule, seq, SAMPLERS[method],
                         eta, self.prediction, cfg.clip_denoised, generator, show, f"sample {self.name} ({method})")

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

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """The variational bound -log p(x) <= L_T + sum L_t + L_0 in bits/dim on `nll_subset` test images
        (pixels as 256 discrete values), with the sum over t estimated from `vlb_timesteps` strata."""
        own = self.cfg
        assert isinstance(own, DiffusionConfig)
        K = max(1, min(own.vlb_timesteps, self.T - 1))
        subset = test.head(cfg.nll_subset)
        net = self.ema.module
        totals = torch.zeros(4, dtype=torch.float64)
        count = 0
        for batch in subset.to(self.device).batches(cfg.batch_size):
            terms = vlb_terms(net, batch.x * 2 - 1, self.labels_of(batch), K, generator, self.schedule,
                              self.prediction, own.clip_denoised)
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
    def noise_interpolation(self, n: int, steps: int, labels: torch.Tensor | None) -> torch.Tensor:
        """Spherical interpolation between two seeded x_T per pair, each decoded by deterministic DDIM (eta = 0)."""
        gen = torch.Generator().manual_seed(0)
        za = torch.randn(n, *self.x_shape, generator=gen).flatten(1)
        zb = torch.randn(n, *self.x_shape, generator=gen).flatten(1)
        rows = [slerp(za, zb, s) for s in torch.linspace(0, 1, steps).tolist()]
        x_T = torch.stack(rows, dim=1).reshape(n * steps, *self.x_shape).to(self.device)
        labels = labels.repeat_interleave(steps).to(self.device) if self.conditional else None
        x0 = self.denoise(x_T, gen, labels, method="ddim", eta=0.0, guidance=self.cfg.guidance)
        return self.from_diffusion_space(x0)


class Diffusion(DenoisingDiffusion, Inpaints):
    """Pixel-space diffusion: the denoiser sees pixels, so it can also complete a partly masked image."""

    @torch.no_grad()
    def complete(self, images: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 nets: Mapping[str, Net] | None = None, steps: int | None = None, method: str | None = None,
                 eta: float | None = None, resample: int | None = None, **kwargs) -> torch.Tensor:
        """Inpainting with the unconditional model (RePaint, Lugmayr et al. 2022; samplers.run_inpaint_chain): the
        pixels where mask is 0 are generated, consistent with the kept ones. A class-conditional model runs with
        its null label (guidance 0): the label of a half-seen digit is what the completion has to work out."""
        cfg = self.cfg
        net = (nets or self.sampling_nets())["denoiser"]
        method = method or cfg.sample_method
        if method not in SAMPLERS:
            raise GenopsError(f"{self.name}: sampling method {method!r}: expected one of {', '.join(SAMPLERS)}")
        if steps is not None and not 1 <= int(steps) <= self.T:
            raise GenopsError(f"{self.name}: steps={steps}: expected 1..{self.T} (the model's timesteps T)")
        seq = self.timesteps(cfg.sample_steps if steps is None else steps)
        known = images.to(self.device) * 2 - 1
        mask = mask.to(self.device, known.dtype).expand(known.shape[0], 1, *known.shape[2:])
        labels = torch.full((known.shape[0],), self.num_classes, dtype=torch.long, device=self.device) \
            if self.conditional else None
        x_T = torch.randn(known.shape, generator=generator).to(self.device)
        x0 = run_inpaint_chain(lambda x, t: self._predict(net, x, t, labels, 1.0), x_T, known, mask, self.schedule,
                               seq, SAMPLERS[method], cfg.eta if eta is None else float(eta), self.prediction,
                               cfg.clip_denoised, generator, cfg.inpaint_resample if resample is None else resample,
                               len(seq) >= 20, f"inpaint {self.name}")
        return self.from_diffusion_space(x0, nets)
