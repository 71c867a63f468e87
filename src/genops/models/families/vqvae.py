"""VQ-VAE (van den Oord et al. 2017) with a Gated PixelCNN prior over its code grid.

    z_e = enc(x)                        h x w grid of D-dim vectors (stride-2 convs)
    k   = argmin_j ||z_e - e_j||        nearest codebook entry per position; z_q = e_k
    x_hat = dec(z_q)                    the decoder sees z_e + sg(z_q - z_e): straight-through gradients
    loss = ||x - x_hat||^2 + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2

With `ema: true` the codebook term is dropped and each entry instead tracks the running mean of the
encoder outputs assigned to it (decay gamma, Laplace-smoothed counts), which is less prone to dead
codes and needs no codebook learning rate. The quantiser records, per training step, which codes
were used: perplexity (exp of the usage entropy: K when all codes are used equally) and dead codes
(unused over the last `dead_window` steps) show codebook collapse while it happens. Two defaults
fight collapse: the codebook starts on random encoder outputs of the first batch (`data_init`; a
small random init sits far from the encoder's outputs and everything snaps to one entry), and dead
codes are re-seeded from random encoder outputs of the current batch (`reset_dead`).

Training has two phases in one loop: the first `vq_fraction` of the steps train encoder, codebook and decoder; later
steps train the prior, a `GatedPixelCNN` over code indices, on the codes of the frozen encoder
(class-conditional when `conditional: true`; the decoder is unconditional). Sampling draws a code
grid from the prior (one pass per code, loop outside the graph, inverse-CDF draws from the caller's
uniforms) and decodes it in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genops.config.families import VQVAEConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.autoregressive import sample_autoregressive
from genops.models.capabilities import Interpolates, OwnMetrics, Phased
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.networks.vq import (
    CodeDecoder,
    CodePrior,
    VectorQuantizer,
    VqDecoder,
    VqEncoder,
    code_grid,
    perplexity,
)


class VQVAE(Family, Phased, OwnMetrics, Interpolates):
    name = "vqvae"
    info = FamilyInfo(
        summary="VQ-VAE (nearest-neighbour codebook, straight-through gradients, optional EMA codebook) "
                "with a Gated PixelCNN prior over the code grid, trained in a second phase.",
        samples_by="the PixelCNN prior samples a code grid (one pass per code), the decoder maps it to an image",
        limits=["two-phase training: the prior trains only in the last (1 - vq_fraction) of the steps",
                "the prior NLL is over codes, not pixels: not comparable with other families' NLL",
                "MSE reconstructions are slightly blurry; codebook collapse (few used codes) limits diversity"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "vq_loss"  # the VQ phase's objective; it is measured (frozen) during the prior phase too

    cfg: VQVAEConfig

    def __init__(self, cfg: VQVAEConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        widths = list(cfg.widths)
        self.code_dim = cfg.code_dim
        self.num_codes = cfg.codebook_size
        self.beta = cfg.beta
        self.reset = cfg.reset_dead
        self.init_codebook = cfg.data_init
        self.grid = code_grid(spec, len(widths))[-1]
        self.encoder = VqEncoder(spec, widths, self.code_dim, cfg.depth)
        self.decoder = VqDecoder(spec, widths, self.code_dim, cfg.depth)
        self.quantizer = VectorQuantizer(self.num_codes, self.code_dim, ema=cfg.ema, decay=cfg.decay,
                                         dead_window=cfg.dead_window)
        self.prior = CodePrior(self.num_codes, cfg.prior_width, cfg.prior_depth, cfg.prior_kernel, cfg.prior_embed,
                               spec.num_classes if self.conditional else 0)

    def check_steps(self, steps: int) -> None:
        """Both phases (VQ-VAE, then the prior) must get steps, checked before training."""
        try:
            self.cfg.phase_split(steps)
        except ValueError as exc:
            raise GenopsError(f"{self.name}: {exc}") from None

    def flop_phases(self) -> list[tuple[float, float]]:
        return [(0.0, self.cfg.vq_fraction), (self.cfg.vq_fraction, 1.0 - self.cfg.vq_fraction)]

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "quantizer": self.quantizer, "prior": self.prior}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        vq = [*self.encoder.parameters(), *self.decoder.parameters(), *self.quantizer.parameters()]
        return {"vq": torch.optim.Adam(vq, lr=lr),
                "prior": torch.optim.Adam(self.prior.parameters(),
                                          lr=self.cfg.prior_lr if self.cfg.prior_lr is not None else lr)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> code indices (N, h, w)."""
        return self.quantizer.codes(self.encoder(x).float())

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """VQ-VAE update for the first `vq_fraction` of the steps, prior update after; every step logs the
        same keys."""
        if ctx.step < self.cfg.phase_split(ctx.total_steps):
            return self._vq_step(batch, ctx)
        return self._prior_step(batch, ctx)

    def _vq_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            z_e = self.encoder(batch.x)
        if int(self.quantizer.updates) == 0 and self.init_codebook:
            self.quantizer.init_from(z_e.float(), ctx.generator)
        # Distances and losses in fp32: bf16 nearest-neighbour search flips close assignments.
        z_q, codes, codebook, commit = self.quantizer(z_e.float())
        with ctx.autocast():
            x_hat = self.decoder(z_q)
        recon = F.mse_loss(x_hat.float(), batch.x)
        loss = recon + codebook + self.beta * commit
        ctx.backward("vq", loss)
        ctx.optimizers["vq"].step()
        if self.quantizer.ema:
            self.quantizer.ema_update(z_e.detach().float(), codes)
        perp, dead = self.quantizer.record_usage(codes)
        if self.reset and dead:
            self.quantizer.reset_dead(z_e.float(), ctx.generator)
        return {"loss": loss.detach(), "vq_loss": loss.detach(), "recon_mse": recon.detach(), "commit": commit.detach(),
                "perplexity": perp, "dead_codes": float(dead), "prior_nll_bpc": 0.0, "phase": 0.0}

    def _prior_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        y = self.labels_of(batch)
        with torch.no_grad():  # the VQ-VAE is frozen; its losses are still logged for continuity
            z_e = self.encoder(batch.x).float()
            z_q, codes, codebook, commit = self.quantizer(z_e)
            recon = F.mse_loss(self.decoder(z_q).float(), batch.x)
        with ctx.autocast():
            logits = self.prior(codes, y)
        loss = F.cross_entropy(logits.float(), codes)  # nats per code
        ctx.backward("prior", loss)
        ctx.optimizers["prior"].step()
        perp, dead = self.quantizer.record_usage(codes)
        vq_loss = (recon + codebook + self.beta * commit).detach()
        return {"loss": loss.detach(), "vq_loss": vq_loss, "recon_mse": recon.detach(), "commit": commit.detach(),
                "perplexity": perp, "dead_codes": float(dead), "prior_nll_bpc": loss.detach().double() / math.log(2.0),
                "phase": 1.0}

    def sampling_nets(self) -> dict[str, Net]:
        return {"prior": self.prior, "decoder": CodeDecoder(self.quantizer, self.decoder)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, progress: bool = True) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        labels = self.sampling_labels(n, labels)
        codes = sample_autoregressive(nets["prior"], n, (1, *self.grid), generator, labels,
                                      lambda grid: grid[:, 0], self.device, progress, desc=f"sample {self.name}")
        return nets["decoder"](codes[:, 0]).clamp(0, 1)

    def sampling_passes(self, **options) -> int:
        """One prior pass per code of the grid, in raster order, then one decoder pass."""
        return self.grid[0] * self.grid[1] + 1

    def export_specs(self) -> list[ExportSpec]:
        # The parity check draws indices below the example's max + 1: make that max K - 1 (whole codebook).
        codes = (torch.arange(2 * self.grid[0] * self.grid[1]) % self.num_codes).view(2, *self.grid)
        codes[-1, -1, -1] = self.num_codes - 1
        decoder = ExportSpec("decoder", CodeDecoder(self.quantizer, self.decoder), (codes,), ["codes"], ["image"])
        if self.conditional:
            label = torch.zeros(2, dtype=torch.long)
            return [ExportSpec("prior", self.prior, (codes, label), ["codes", "label"], ["logits"],
                               {"codes": {1: "rows"}}), decoder]
        return [ExportSpec("prior", self.prior, (codes,), ["codes"], ["logits"], {"codes": {1: "rows"}}), decoder]

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Reconstruction MSE, the prior's NLL over test codes, and codebook usage on test codes."""
        mse, nll, count = 0.0, 0.0, 0
        usage = torch.zeros(self.num_codes, dtype=torch.long)
        for batch in test.to(self.device).batches(cfg.batch_size):
            codes = self.encode(batch.x)
            mse += (self.decoder(self.quantizer.lookup(codes)) - batch.x).pow(2).flatten(1).mean(1).sum().item()
            logits = self.prior(codes, self.labels_of(batch)).float()
            nll += F.cross_entropy(logits, codes, reduction="none").flatten(1).sum(1).sum().item()
            usage += torch.bincount(codes.reshape(-1).cpu(), minlength=self.num_codes)
            count += batch.x.shape[0]
        count = max(count, 1)
        per_image = self.grid[0] * self.grid[1]
        return {"test_recon_mse": mse / count, "test_prior_nll_nats": nll / count,
                "test_prior_bits_per_code": nll / count / per_image / math.log(2.0),
                "test_codebook_perplexity": perplexity(usage),
                "test_codes_used": float((usage > 0).sum()), "test_dead_codes": float((usage == 0).sum()),
                "codebook_size": float(self.num_codes)}

    @torch.no_grad()
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        """Linear paths between encoder outputs (before quantisation), each point quantised and decoded."""
        za, zb = self.encoder(a.x).float(), self.encoder(b.x).float()
        rows = []
        for t in torch.linspace(0, 1, steps):
            z = (1 - t) * za + t * zb
            rows.append(self.decoder(self.quantizer.lookup(self.quantizer.codes(z))))
        return torch.stack(rows, dim=1).flatten(0, 1).clamp(0, 1)
