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

Training has two phases in one loop: steps < `vq_steps` train encoder, codebook and decoder; later
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

from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.base import ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.layers import level_sizes
from genops.models.pixelcnn import GatedPixelCNN, sample_autoregressive


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """x + conv1x1(act(norm(conv3x3(act(norm(x)))))): the VQ-VAE paper's block, pre-normalised.

    Without normalisation, mostly-black images drive the sigmoid output into saturation within a few
    dozen Adam steps and the encoder stops receiving gradients.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def code_grid(spec: DataSpec, levels: int) -> list[tuple[int, int]]:
    """Spatial sizes from the image down to the code grid (sizes round up, as in `layers`)."""
    return level_sizes(spec.height, spec.width, levels)


class VqEncoder(nn.Module):
    """x -> z_e (N, D, h, w): a 3x3 stem, one stride-2 conv per level, residual blocks, 1x1 to D."""

    def __init__(self, spec: DataSpec, widths: list[int], code_dim: int, res_blocks: int) -> None:
        super().__init__()
        sizes = code_grid(spec, len(widths))
        widths = widths[: len(sizes) - 1] or widths[:1]
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, widths[0], 3, padding=1)]
        c_in = widths[0]
        for c_out in widths[: len(sizes) - 1]:
            layers += [_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
            c_in = c_out
        layers += [ResBlock(c_in) for _ in range(res_blocks)]
        layers += [_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, code_dim, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)


class VqDecoder(nn.Module):
    """z_q (N, D, h, w) -> image in [0, 1]; up-sampling resizes to the encoder's exact sizes."""

    def __init__(self, spec: DataSpec, widths: list[int], code_dim: int, res_blocks: int) -> None:
        super().__init__()
        sizes = code_grid(spec, len(widths))
        widths = widths[: len(sizes) - 1] or widths[:1]
        c_in = widths[-1] if len(sizes) > 1 else widths[0]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, c_in, 3, padding=1)]
        layers += [ResBlock(c_in) for _ in range(res_blocks)]
        for level in range(len(sizes) - 1, 0, -1):
            c_out = widths[level - 2] if level >= 2 else widths[0]
            layers += [_norm(c_in), nn.SiLU(), nn.Upsample(size=sizes[level - 1], mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1)]
            c_in = c_out
        layers += [_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, spec.channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(z))


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy of code usage counts): the effective number of codes in use (K when uniform)."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


class VectorQuantizer(nn.Module):
    """Codebook of K D-dim vectors: nearest-neighbour lookup, losses, EMA updates and usage tracking.

    Everything that must survive a checkpoint (EMA statistics, when each code was last used) is a
    buffer, so a resumed run counts dead codes exactly as an uninterrupted one.
    """

    def __init__(self, num_codes: int, code_dim: int, ema: bool = False, decay: float = 0.99,
                 dead_window: int = 100, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.ema = num_codes, code_dim, ema
        self.decay, self.dead_window, self.eps = decay, dead_window, eps
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("embedding", init)
            # Each code starts with one unit of mass at its initial position, so unused codes stay put.
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("last_used", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("updates", torch.zeros(1, dtype=torch.long))

    def codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h, w) indices of the nearest codebook entries (squared L2)."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
        emb = self.embedding.float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ emb.T + emb.pow(2).sum(1)[None, :]
        return dist.argmin(1).view(z_e.shape[0], *z_e.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) indices -> (N, D, h, w) codebook vectors."""
        return F.embedding(codes, self.embedding).permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e -> (z_q with straight-through gradients, codes, codebook loss, commitment loss)."""
        codes = self.codes(z_e)
        z_q = self.lookup(codes)
        commit = F.mse_loss(z_e, z_q.detach())
        codebook = z_e.new_zeros(()) if self.ema else F.mse_loss(z_q, z_e.detach())
        return z_e + (z_q - z_e).detach(), codes, codebook, commit

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """e_k <- running sum / running count of the encoder outputs assigned to code k."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
        idx = codes.reshape(-1)
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total  # Laplace
        self.embedding.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def record_usage(self, codes: torch.Tensor) -> tuple[float, int]:
        """Count one training step's codes; returns (perplexity of this batch, dead codes so far)."""
        self.updates += 1
        self.last_used[codes.reshape(-1).unique()] = self.updates
        return perplexity(torch.bincount(codes.reshape(-1), minlength=self.num_codes)), self.dead_codes()

    def dead_mask(self) -> torch.Tensor:
        """Codes not used in the last `dead_window` recorded steps (new codes get a window's grace)."""
        return self.updates - self.last_used >= self.dead_window

    def dead_codes(self) -> int:
        return int(self.dead_mask().sum())

    @torch.no_grad()
    def init_from(self, z_e: torch.Tensor, generator: torch.Generator) -> None:
        """Set the codebook to random encoder outputs (data-dependent init).

        A codebook initialised near zero, far from the encoder's outputs, collapses onto the one entry
        nearest their mean; entries placed on the data start out in use.
        """
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
        if flat.shape[0] >= self.num_codes:
            pick = torch.randperm(flat.shape[0], generator=generator)[: self.num_codes]
        else:
            pick = torch.randint(0, flat.shape[0], (self.num_codes,), generator=generator)
        self.embedding.data.copy_(flat[pick.to(flat.device)])
        if self.ema:
            self.ema_sum.copy_(self.embedding)
            self.ema_count.fill_(1.0)

    @torch.no_grad()
    def reset_dead(self, z_e: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed dead codes with random encoder outputs from the batch; returns how many."""
        dead = self.dead_mask().nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        self.embedding.data[dead] = flat[pick].to(self.embedding.dtype)
        if self.ema:
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0
        self.last_used[dead] = self.updates
        return int(dead.numel())


class CodePrior(nn.Module):
    """The prior's graph: code indices (N, h, w) [, label] -> logits (N, K, h, w)."""

    def __init__(self, num_codes: int, hidden: int, layers: int, kernel: int, embed_dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.net = GatedPixelCNN(1, num_codes, hidden=hidden, layers=layers, kernel=kernel,
                                 num_classes=num_classes, embed_dim=embed_dim)

    def forward(self, codes: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(codes.unsqueeze(1), label).squeeze(2)


class CodeDecoder(nn.Module):
    """The decoder's graph: code indices (N, h, w) int64 -> image in [0, 1]."""

    def __init__(self, quantizer: VectorQuantizer, decoder: VqDecoder) -> None:
        super().__init__()
        self.quantizer, self.decoder = quantizer, decoder

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(codes))


class VQVAE(Family):
    name = "vqvae"
    info = FamilyInfo(
        summary="VQ-VAE (nearest-neighbour codebook, straight-through gradients, optional EMA codebook) "
                "with a Gated PixelCNN prior over the code grid, trained in a second phase.",
        samples_by="the PixelCNN prior samples a code grid (one pass per code), the decoder maps it to an image",
        limits=["two-phase training: the prior only trains after `vq_steps` steps, so a run shorter than "
                "that samples from an untrained prior",
                "the prior NLL is over codes, not pixels: not comparable with other families' NLL",
                "MSE reconstructions are slightly blurry; codebook collapse (few used codes) limits diversity"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "vq_loss"  # the VQ phase's objective; it is measured (frozen) during the prior phase too

    def __init__(self, cfg: dict, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        widths = list(cfg.get("widths", [32, 64]))
        self.code_dim = int(cfg.get("code_dim", 32))
        self.num_codes = int(cfg.get("codebook_size", 128))
        if self.num_codes < 2:
            raise GenopsError(f"{self.name}.codebook_size={self.num_codes}: expected at least 2")
        self.beta = float(cfg.get("beta", 0.25))
        self.vq_steps = int(cfg.get("vq_steps", 1000))
        self.reset = bool(cfg.get("reset_dead", True))
        self.init_codebook = bool(cfg.get("data_init", True))
        res_blocks = int(cfg.get("res_blocks", 2))
        self.grid = code_grid(spec, len(widths))[-1]
        self.encoder = VqEncoder(spec, widths, self.code_dim, res_blocks)
        self.decoder = VqDecoder(spec, widths, self.code_dim, res_blocks)
        self.quantizer = VectorQuantizer(self.num_codes, self.code_dim, ema=bool(cfg.get("ema", True)),
                                         decay=float(cfg.get("decay", 0.99)),
                                         dead_window=int(cfg.get("dead_window", 100)))
        self.prior = CodePrior(self.num_codes, int(cfg.get("prior_hidden", 64)), int(cfg.get("prior_layers", 6)),
                               int(cfg.get("prior_kernel", 3)), int(cfg.get("prior_embed", 32)),
                               spec.num_classes if self.conditional else 0)

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "quantizer": self.quantizer, "prior": self.prior}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        vq = [*self.encoder.parameters(), *self.decoder.parameters(), *self.quantizer.parameters()]
        return {"vq": torch.optim.Adam(vq, lr=lr),
                "prior": torch.optim.Adam(self.prior.parameters(), lr=float(self.cfg.get("prior_lr", lr)))}

    def _labels(self, batch: Batch) -> torch.Tensor | None:
        return batch.y if self.conditional else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> code indices (N, h, w)."""
        return self.quantizer.codes(self.encoder(x).float())

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """VQ-VAE update before `vq_steps`, prior update after; every step logs the same keys."""
        if ctx.step < self.vq_steps:
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
        opt = ctx.optimizers["vq"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if self.quantizer.ema:
            self.quantizer.ema_update(z_e.detach().float(), codes)
        perp, dead = self.quantizer.record_usage(codes)
        if self.reset and dead:
            self.quantizer.reset_dead(z_e.float(), ctx.generator)
        return {"loss": loss.item(), "vq_loss": loss.item(), "recon_mse": recon.item(), "commit": commit.item(),
                "perplexity": perp, "dead_codes": float(dead), "prior_nll_bpc": 0.0, "phase": 0.0}

    def _prior_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        y = self._labels(batch)
        with torch.no_grad():  # the VQ-VAE is frozen; its losses are still logged for continuity
            z_e = self.encoder(batch.x).float()
            z_q, codes, codebook, commit = self.quantizer(z_e)
            recon = F.mse_loss(self.decoder(z_q).float(), batch.x)
        with ctx.autocast():
            logits = self.prior(codes, y)
        loss = F.cross_entropy(logits.float(), codes)  # nats per code
        opt = ctx.optimizers["prior"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        perp, dead = self.quantizer.record_usage(codes)
        vq_loss = (recon + codebook + self.beta * commit).item()
        return {"loss": loss.item(), "vq_loss": vq_loss, "recon_mse": recon.item(), "commit": commit.item(),
                "perplexity": perp, "dead_codes": float(dead), "prior_nll_bpc": loss.item() / math.log(2.0),
                "phase": 1.0}

    def sampling_nets(self) -> dict[str, Net]:
        return {"prior": self.prior, "decoder": CodeDecoder(self.quantizer, self.decoder)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, progress: bool = True) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        labels = labels if labels is not None else self.default_labels(n)
        codes = sample_autoregressive(nets["prior"], n, (1, *self.grid), generator, labels,
                                      lambda grid: grid[:, 0], self.device, progress, desc=f"sample {self.name}")
        return nets["decoder"](codes[:, 0]).clamp(0, 1)

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
    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator) -> dict[str, float]:
        """Reconstruction MSE, the prior's NLL over test codes, and codebook usage on test codes."""
        mse, nll, count = 0.0, 0.0, 0
        usage = torch.zeros(self.num_codes, dtype=torch.long)
        for batch in test.to(self.device).batches(int(cfg.get("batch_size", 256))):
            codes = self.encode(batch.x)
            mse += (self.decoder(self.quantizer.lookup(codes)) - batch.x).pow(2).flatten(1).mean(1).sum().item()
            logits = self.prior(codes, self._labels(batch)).float()
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
