"""A small StyleGAN2 (Karras et al. 2019, 2020): style-based generator, style mixing, R1, truncation.

Training: the non-saturating logistic loss of the DCGAN family, an R1 penalty on real images applied lazily
(every `r1_every` steps, scaled up by as much), and style-mixing regularisation: with probability `style_mixing`
a sample's layers take their styles from two z's, switching at a random layer, so no layer may rely on its
neighbours sharing a style. The sampling generator is an EMA of the trained one. One training step = one
discriminator update and one generator update.

Sampling: z -> mapping -> w, truncated towards the tracked mean w by psi, the same w for every layer, fresh noise
per layer. The claim the evaluation tests is that w is more disentangled than z: perceptual path length (Karras
et al. 2019: the squared feature distance between images a small step apart on a path, over the step squared),
measured in the evaluator's feature space along interpolations in z and in w. A style-mixing grid shows coarse
styles from one sample combined with fine styles from another.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from genops.config.families import StyleGanConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.models.capabilities import InterpolatesNoise, OwnFigures, OwnMetrics, SampleVariants
from genops.models.diffusion.ema import ema_avg_fn
from genops.models.families.adversarial import Adversarial, d_loss, g_loss, grad_norm, r1_due, r1_penalty
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.latent_paths import slerp
from genops.models.networks.dcgan import Discriminator
from genops.models.networks.stylegan import MappingGraph, StyleGenerator, SynthesisGraph
from genops.models.sharding import BatchNoise, all_reduce_sum, batch_noise, current_shard


def trimmed_mean(values: torch.Tensor, tail: float) -> float:
    """The mean without the `tail` fraction at each end: path lengths have rare huge values where the path
    crosses a sharp change (Karras et al. 2019 drop the 1 % tails)."""
    lo, hi = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype))
    return float(values[(values >= lo) & (values <= hi)].mean())


MIXING_PSI = 0.7  # the style-mixing figure's truncation: typical samples make the swapped styles easy to see


class StyleGAN(Adversarial, InterpolatesNoise, SampleVariants, OwnMetrics, OwnFigures):
    name = "stylegan"
    info = FamilyInfo(
        summary="StyleGAN2: mapping network z -> w, modulated convolutions driven by per-layer styles, per-layer "
                "noise, style-mixing regularisation, lazy R1, EMA generator; truncation at sampling.",
        samples_by="z -> mapping -> w (truncated towards the mean w by psi) -> synthesis with fresh per-layer noise",
        limits=["no likelihood and no encoder", "adversarial training can oscillate or mode-collapse: see recall, "
                "modes covered and the collapse warnings", "unconditional only"],
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss_d"
    sample_options = ("truncation",)

    cfg: StyleGanConfig

    def __init__(self, cfg: StyleGanConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.G = StyleGenerator(spec, cfg.latent_dim, cfg.w_dim, list(cfg.widths), cfg.mapping_depth,
                                cfg.mapping_lr_mul, cfg.noise)
        self.D = Discriminator(spec, list(cfg.d_widths or cfg.widths), 0, "none", False)  # R1 needs no batch norm
        self.ema = AveragedModel(self.G, multi_avg_fn=ema_avg_fn(cfg.ema_decay, True))
        self.num_ws, self.latent_dim = self.G.num_ws, cfg.latent_dim

    def flop_cycle(self) -> int:
        return self.cfg.r1_every

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "discriminator": self.D, "ema": self.ema}

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.G.parameters())

    def discriminators(self) -> dict[str, nn.Module]:
        return {"d": self.D}

    # --- training -------------------------------------------------------------------------------
    def mixed_styles(self, n: int, noise: BatchNoise, track: bool = False) -> torch.Tensor:
        """Training styles N x num_ws x w_dim: each sample mixes two z's at a random layer with probability
        `style_mixing` (else one w for all layers). `track` moves the tracked mean w towards this batch's."""
        device = self.device
        w = self.G.mapping(noise.randn(n, self.latent_dim).to(device))
        if track:
            with torch.no_grad():
                shard = current_shard()
                mean = all_reduce_sum(w.detach().sum(0)) / (n * shard.world)
                self.G.mapping.w_avg.lerp_(mean.float(), 1 - self.cfg.w_avg_beta)
        ws = self.G.broadcast(w)
        if self.cfg.style_mixing > 0:
            w2 = self.G.mapping(noise.randn(n, self.latent_dim).to(device))
            mix = noise.rand(n).to(device) < self.cfg.style_mixing
            cut = torch.where(mix, noise.randint(self.num_ws - 1, n).to(device) + 1, self.num_ws)
            second = torch.arange(self.num_ws, device=device)[None, :] >= cut[:, None]
            ws = torch.where(second[..., None], w2[:, None, :], ws)
        return ws

    def fake(self, n: int, noise: BatchNoise, track: bool = False) -> torch.Tensor:
        ws = self.mixed_styles(n, noise, track)
        return self.G.synthesis(ws, noise.randn(n, self.G.synthesis.noise_size).to(self.device))

    def d_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """One discriminator update (with the lazy R1 penalty on this step's reals when it is due)."""
        n = batch.x.shape[0]
        with torch.no_grad(), ctx.autocast():
            fake = self.fake(n, ctx.noise)
        with ctx.autocast():
            real_score, fake_score = self.D(batch.x).float(), self.D(fake.float()).float()
        loss = d_loss("nonsaturating", real_score, fake_score)
        r1 = getattr(self, "_last_r1", torch.zeros((), device=batch.x.device))  # logged: the latest penalty
        if r1_due(ctx.step, self.cfg.r1_gamma, self.cfg.r1_every):
            r1 = r1_penalty(self.D, batch.x)
            loss = loss + 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * r1
            self._last_r1 = r1.detach()
        ctx.backward("d", loss)
        norm = grad_norm(self.D)
        ctx.optimizers["d"].step()
        return {"loss_d": loss.detach(), "d_real": torch.sigmoid(real_score).mean().detach(),
                "d_fake": torch.sigmoid(fake_score).mean().detach(), "grad_norm_d": norm, "r1": r1.detach()}

    def g_step(self, n: int, ctx: StepContext) -> dict[str, float]:
        """One generator update through a frozen D, then the EMA generator and the tracked mean w follow."""
        self.D.requires_grad_(False)
        try:
            with ctx.autocast():
                loss = g_loss("nonsaturating", self.D(self.fake(n, ctx.noise, track=True).float()).float())
            ctx.backward("g", loss)
            norm = grad_norm(self.G)
            ctx.optimizers["g"].step()
        finally:
            self.D.requires_grad_(True)
        self.ema.update_parameters(self.G)
        self.ema.module.mapping.w_avg.copy_(self.G.mapping.w_avg)  # a buffer: AveragedModel leaves it alone
        return {"loss_g": loss.detach(), "grad_norm_g": norm}

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        out = self.d_step(batch, ctx)
        return {**out, **self.g_step(batch.x.shape[0], ctx)}

    # --- sampling -------------------------------------------------------------------------------
    def sampling_nets(self) -> dict[str, Net]:
        return {"mapping": MappingGraph(self.ema.module), "synthesis": SynthesisGraph(self.ema.module)}

    def sample_variants(self) -> dict[str, dict]:
        """Truncation psi below 1: typical samples (precision) at the cost of diversity (recall, modes)."""
        return {f"psi{round(psi * 100):03d}": {"truncation": psi} for psi in self.cfg.eval_truncation}

    def _draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """z and the flattened per-layer noise for n samples, in that order from `generator`."""
        draw = batch_noise(generator)
        z = draw.randn(n, self.latent_dim)
        return z.to(self.device), draw.randn(n, self.G.synthesis.noise_size).to(self.device)

    def _psi(self, n: int, truncation: float | None) -> torch.Tensor:
        psi = self.cfg.truncation if truncation is None else float(truncation)
        return torch.full((n, 1), psi, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, truncation: float | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        z, noise = self._draw(n, generator)
        w = nets["mapping"](z, self._psi(n, truncation)).to(self.device)
        ws = self.ema.module.broadcast(w).contiguous()  # ONNX Runtime takes contiguous inputs
        return nets["synthesis"](ws, noise).to(self.device).clamp(0, 1)

    def export_specs(self) -> list[ExportSpec]:
        g = self.ema.module
        ws, noise = torch.randn(2, self.num_ws, self.cfg.w_dim), torch.randn(2, g.synthesis.noise_size)
        return [ExportSpec("synthesis", SynthesisGraph(g), (ws, noise), ["ws", "noise"], ["image"]),
                ExportSpec("mapping", MappingGraph(g), (torch.randn(2, self.latent_dim), torch.ones(2, 1)),
                           ["z", "psi"], ["w"])]

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def noise_interpolation(self, n: int, steps: int, labels: torch.Tensor | None) -> torch.Tensor:
        """No encoder: straight lines in w between seeded samples (one row per pair), noise held fixed."""
        g = self.ema.module
        gen = torch.Generator().manual_seed(0)
        (za, noise), (zb, _) = self._draw(n, gen), self._draw(n, gen)
        wa, wb = g.mapping(za), g.mapping(zb)
        rows = [g.synthesis(g.broadcast(torch.lerp(wa, wb, float(t))), noise) for t in torch.linspace(0, 1, steps)]
        return torch.stack(rows, dim=1).flatten(0, 1).clamp(0, 1)

    @torch.no_grad()
    def path_lengths(self, features, n: int, epsilon: float, batch_size: int,
                     generator: torch.Generator) -> dict[str, float]:
        """Perceptual path length in z (slerp) and in w (lerp) over the same n endpoint pairs, t and noise:
        E[ ||f(g(path(t))) - f(g(path(t + eps)))||^2 ] / eps^2, with f the evaluator's features and the 1 % tails
        on both sides dropped (Karras et al. 2019)."""
        g = self.ema.module
        dist: dict[str, list[torch.Tensor]] = {"z": [], "w": []}
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z0, noise = self._draw(m, generator)
            z1, _ = self._draw(m, generator)
            t = torch.rand(m, 1, generator=generator).to(self.device) * (1 - epsilon)
            w0, w1 = g.mapping(z0), g.mapping(z1)
            ends = {"z": (g.mapping(slerp(z0, z1, t)), g.mapping(slerp(z0, z1, t + epsilon))),
                    "w": (torch.lerp(w0, w1, t), torch.lerp(w0, w1, t + epsilon))}
            for space, (wa, wb) in ends.items():
                images = g.synthesis(g.broadcast(torch.cat([wa, wb])), torch.cat([noise, noise])).clamp(0, 1)
                feats = features(images).double()
                dist[space].append((feats[:m] - feats[m:]).pow(2).sum(1).cpu() / epsilon**2)
        return {f"ppl_{space}": trimmed_mean(torch.cat(d), 0.01) for space, d in dist.items()}

    def evaluate(self, test: ImageSet, cfg, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        if evaluator is None:
            return {}
        out = self.path_lengths(evaluator.features, self.cfg.ppl_samples, self.cfg.ppl_epsilon, cfg.batch_size,
                                generator)
        out["ppl_w_over_z"] = out["ppl_w"] / out["ppl_z"] if out["ppl_z"] > 0 else float("nan")
        return out

    @torch.no_grad()
    def style_mixing_grid(self, generator: torch.Generator, k: int = 6) -> torch.Tensor:
        """(k+1) x (k+1) images: row 0 the fine-style sources, column 0 the coarse-style sources, cell (i, j) the
        coarse styles (the coarser half of the resolutions) of row i's source with the fine styles of column j's.
        All cells share one noise."""
        g = self.ema.module
        z, noise = self._draw(2 * k, generator)
        w = g.mapping.truncate(g.mapping(z), MIXING_PSI)
        coarse, fine = w[:k], w[k:]
        one_noise = noise[:1]
        synth = lambda ws: g.synthesis(ws, one_noise.expand(ws.shape[0], -1)).clamp(0, 1)  # noqa: E731
        cut = self.coarse_layers()
        cells = [torch.zeros_like(synth(g.broadcast(fine[:1])))]
        cells += [synth(g.broadcast(fine[j: j + 1])) for j in range(k)]
        for i in range(k):
            cells.append(synth(g.broadcast(coarse[i: i + 1])))
            for j in range(k):
                ws = g.broadcast(fine[j: j + 1]).clone()
                ws[:, :cut] = coarse[i]
                cells.append(synth(ws))
        return torch.cat(cells)

    def coarse_layers(self) -> int:
        """How many leading styles drive the coarser half of the resolutions (e.g. 4x4 and 7x7 of 28x28)."""
        synthesis = self.G.synthesis
        by_size = sorted(set(synthesis.layer_sizes), key=lambda s: s[0] * s[1])
        coarse = set(by_size[: (len(by_size) + 1) // 2])
        return next((i for i, s in enumerate(synthesis.layer_sizes) if s not in coarse), self.num_ws)

    def figures(self, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        return {"style_mixing": (self.style_mixing_grid(generator), 7)}
