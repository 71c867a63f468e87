"""Progressive distillation (Salimans & Ho 2022) of the registered pixel-diffusion model's deterministic sampler.

The teacher is the registered `diffusion` model (the train stage resolves it from the registry and records its
version, as for latent diffusion). A student with the teacher's network starts from the teacher's weights and
learns to do in one DDIM step what the teacher does in two: for x from the data, a student step j of N on a
nested grid, z_t = alpha_t x + sigma_t eps, the teacher takes two DDIM steps (eta 0) t -> t' -> t'', and the
student's target is the x~ for which one DDIM step from z_t lands on the teacher's z_t'':

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)     (paper, Algorithm 2)

with the loss in x-space weighted by "truncated SNR", max(alpha_t^2 / sigma_t^2, 1) (paper, eq. 9), and the
student predicting v as the teacher does. Training is split evenly into `rounds`; after each round the student
(its EMA) becomes the teacher and the steps halve: 64 -> 32 -> 16 -> 8 -> 4 by default. The grid is nested
(t_k = (T - 1) k / N, so the student's grid is every other point of the teacher's), and sampling uses the same
grid. The evaluation measures FID against steps for the students and, on the same grid, the original teacher,
so "half the steps at the teacher's quality" is a number on the quality/speed chart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn

from genops.config.families import DiffusionConfig, DistilledDiffusionConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import Phased
from genops.models.diffusion.schedules import expand
from genops.models.families.diffusion import Diffusion
from genops.models.family import EvaluatorView, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.sharding import BatchNoise

# What the student takes from the teacher: its network, forward process and parameterisation.
FROM_TEACHER = ("timesteps", "schedule", "prediction", "widths", "depth", "attention_levels", "dropout",
                "conditional", "p_uncond", "clip_denoised", "guidance")


class DistilledDiffusion(Diffusion, Phased):
    name = "diffusion-distilled"
    info = FamilyInfo(
        summary="Progressive distillation (Salimans & Ho 2022) of the registered diffusion model's DDIM sampler: "
                "a student U-Net that needs half the teacher's steps, halved round after round.",
        samples_by="deterministic DDIM with the distilled student on a nested grid of start_steps / 2^rounds "
                   "steps (4 by default); the loop runs outside the exported network",
        limits=["a distilled student is a sampler, not a likelihood model: no NLL is reported",
                "trained on one registered diffusion version (its lineage tags): a new teacher needs new rounds",
                "each halving loses a little quality; at a CPU budget the rounds are short"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")
    cfg: DistilledDiffusionConfig

    def __init__(self, cfg: DistilledDiffusionConfig, spec: DataSpec, base: Family | None = None) -> None:
        """`base` is the registered pixel diffusion model (with weights when training; an untrained one of the same
        shape when a bundle is rebuilt, whose weights then load with this family's)."""
        if type(base) is not Diffusion:
            raise GenopsError(f"diffusion-distilled needs the pixel diffusion family as its base, got "
                              f"{type(base).__name__}")
        if base.prediction != "v":
            raise GenopsError("diffusion-distilled: the base predicts eps; progressive distillation needs a "
                              "v-prediction teacher (set diffusion.prediction: v and retrain it)")
        assert isinstance(base.cfg, DiffusionConfig)
        self.teacher_cfg = base.cfg
        rounds = [cfg.start_steps >> (r + 1) for r in range(cfg.rounds)]
        update = {**{k: getattr(base.cfg, k) for k in FROM_TEACHER}, "sample_steps": rounds[-1], "eval_steps": rounds}
        try:  # validated again: the teacher's chain must hold start_steps
            cfg = type(cfg).model_validate({**cfg.model_dump(by_alias=True), **update})
        except ValueError as exc:
            raise GenopsError(f"diffusion-distilled on a teacher with timesteps={base.cfg.timesteps}: {exc}") from None
        if cfg.start_steps > base.cfg.timesteps:
            raise GenopsError(f"diffusion-distilled.start_steps={cfg.start_steps} exceeds the teacher's timesteps "
                              f"({base.cfg.timesteps})")
        super().__init__(cfg, spec, base)
        teacher_weights = base.ema.module.state_dict()
        self.original = self.build_denoiser()  # the registered teacher, kept for the evaluation's comparison
        self.teacher = self.build_denoiser()  # this round's teacher: the previous round's student
        for net in (self.original, self.teacher, self.net, self.ema.module):
            net.load_state_dict(teacher_weights)
        for net in (self.original, self.teacher):
            net.requires_grad_(False)

    @property
    def base_cfg(self) -> DiffusionConfig:
        """The teacher's config, saved with this family so the bundle can rebuild the base."""
        return self.teacher_cfg

    def networks(self) -> dict[str, nn.Module]:
        return {**super().networks(), "teacher": self.teacher, "original": self.original}

    def train_mode(self, on: bool = True) -> None:
        super().train_mode(on)
        self.teacher.eval()
        self.original.eval()

    def check_steps(self, steps: int) -> None:
        if steps < self.cfg.rounds:
            raise GenopsError(f"diffusion-distilled: {steps} training steps cannot make {self.cfg.rounds} rounds")

    # --- the nested grid and the rounds ---------------------------------------------------------
    def timesteps(self, steps: int) -> list[int]:
        """t_k = (T - 1) k / steps for k = steps .. 1, descending (then the last step lands on x_0): halving the
        steps keeps every other point, so one student step spans exactly two teacher steps."""
        steps = max(1, min(int(steps), self.T))
        return [round((self.T - 1) * k / steps) for k in range(steps, 0, -1)]

    def round_of(self, step: int, total: int) -> int:
        return min(step * self.cfg.rounds // max(total, 1), self.cfg.rounds - 1)

    def student_steps(self, round_: int) -> int:
        return self.cfg.start_steps >> (round_ + 1)

    # --- training ---------------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        round_ = self.round_of(ctx.step, ctx.total_steps)
        if ctx.step > 0 and round_ != self.round_of(ctx.step - 1, ctx.total_steps):
            # The round's student (its EMA) becomes the next round's teacher, and the next student starts from it.
            weights = self.ema.module.state_dict()
            self.teacher.load_state_dict(weights)
            self.net.load_state_dict(weights)
        loss = self.distillation_loss(batch, ctx.noise, self.student_steps(round_), ctx.autocast)
        ctx.backward("denoiser", loss)
        grad = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip if self.grad_clip > 0 else
                                              float("inf"))
        ctx.optimizers["denoiser"].step()
        self.ema.update_parameters(self.net)
        return {"loss": loss.detach(), "grad_norm": grad.detach(), "student_steps": float(self.student_steps(round_))}

    def distillation_loss(self, batch: Batch, noise: BatchNoise, n_steps: int, autocast=None) -> torch.Tensor:
        """Truncated-SNR-weighted x-space error of one student DDIM step against two teacher steps."""
        x = self.to_diffusion_space(batch, noise)
        n = x.shape[0]
        fine = self.timesteps(2 * n_steps)  # the teacher's grid; the student's is fine[0::2]
        j = noise.randint(n_steps, n).cpu()
        grid = torch.tensor([*fine, -1])  # -1: the data end (alpha_bar 1)
        t, t_mid, t_end = grid[2 * j], grid[2 * j + 1], grid[2 * j + 2]
        abar = torch.cat([self.schedule.alpha_bar, torch.ones(1, dtype=torch.float64)])  # index -1 -> 1
        a_t, a_mid, a_end = abar[t], abar[t_mid], abar[t_end]
        eps = noise.randn(*x.shape).to(x.device)
        z_t = expand(a_t.sqrt(), x) * x + expand((1 - a_t).sqrt(), x) * eps
        y = self._train_labels(batch, noise)
        with torch.no_grad():
            z_mid = self._ddim_step(self.teacher, z_t, t, a_t, a_mid, y)
            z_end = self._ddim_step(self.teacher, z_mid, t_mid, a_mid, a_end, y)
            ratio = expand(((1 - a_end) / (1 - a_t)).sqrt(), x)
            target = (z_end - ratio * z_t) / (expand(a_end.sqrt(), x) - ratio * expand(a_t.sqrt(), x))
        with (autocast or contextlib.nullcontext)():
            v = self.net(z_t, t.to(x.device, torch.float32), y)
        x_hat = expand(a_t.sqrt(), x) * z_t - expand((1 - a_t).sqrt(), x) * v.float()
        weight = (a_t / (1 - a_t)).clamp(min=1.0).to(x.device, x.dtype)
        return (weight * (x_hat - target).pow(2).flatten(1).mean(1)).mean()

    def _ddim_step(self, net: nn.Module, z: torch.Tensor, t: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor,
                   y: torch.Tensor | None) -> torch.Tensor:
        """One deterministic DDIM step (eta 0) of `net` from z_t to z_s, per-sample timesteps (v-prediction)."""
        v = net(z, t.to(z.device, torch.float32), y).float()
        x0 = expand(a_t.sqrt(), z) * z - expand((1 - a_t).sqrt(), z) * v
        if self.cfg.clip_denoised:
            x0 = x0.clamp(-1, 1)
        eps = (z - expand(a_t.sqrt(), z) * x0) / expand((1 - a_t).sqrt(), z)
        return expand(a_s.sqrt(), z) * x0 + expand((1 - a_s).sqrt(), z) * eps

    # --- sampling and evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, teacher: bool = False, **kwargs) -> torch.Tensor:
        """As Diffusion.sample (DDIM, eta 0 by default, on the nested grid); `teacher` samples with the registered
        teacher instead of the student (the evaluation's reference on the same grid)."""
        if teacher:
            nets = {"denoiser": self.original}
        return super().sample(n, generator, labels, nets, **kwargs)

    def sample_variants(self) -> dict[str, dict]:
        """Student and original teacher at every round's step count, and the teacher at start_steps."""
        out: dict[str, dict] = {f"teacher_ddim{self.cfg.start_steps}": {"steps": self.cfg.start_steps,
                                                                        "teacher": True}}
        for r in range(self.cfg.rounds):
            s = self.student_steps(r)
            out[f"ddim{s}"] = {"steps": s, "method": "ddim"}
            out[f"teacher_ddim{s}"] = {"steps": s, "method": "ddim", "teacher": True}
        return out

    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """No likelihood: the student is distilled for its sampler (see `info.limits`)."""
        return {"student_steps": float(self.cfg.sample_steps), "rounds": float(self.cfg.rounds)}
