"""VQ-VAE networks: encoder/decoder, the vector quantiser (EMA codebook, dead-code restarts) and the code prior."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genops.data.spec import DataSpec
from genops.models.networks.conv import group_norm, level_sizes
from genops.models.networks.pixelcnn import GatedPixelCNN
from genops.models.sharding import all_reduce_sum, gather_rows


class ResBlock(nn.Module):
    """x + conv1x1(act(norm(conv3x3(act(norm(x)))))): the VQ-VAE paper's block, pre-normalised.

    Without normalisation, mostly-black images drive the sigmoid output into saturation within a few
    dozen Adam steps and the encoder stops receiving gradients.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 1))

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
            layers += [group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
            c_in = c_out
        layers += [ResBlock(c_in) for _ in range(res_blocks)]
        layers += [group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, code_dim, 1)]
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
            layers += [group_norm(c_in), nn.SiLU(), nn.Upsample(size=sizes[level - 1], mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1)]
            c_in = c_out
        layers += [group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, spec.channels, 3, padding=1)]
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
        # Statistics of the global batch: summed over data-parallel ranks (a no-op in one process).
        counts = all_reduce_sum(torch.bincount(idx, minlength=self.num_codes).float())
        sums = all_reduce_sum(torch.zeros_like(self.ema_sum).index_add_(0, idx, flat))
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total  # Laplace
        self.embedding.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def record_usage(self, codes: torch.Tensor) -> tuple[float, int]:
        """Count one training step's codes; returns (perplexity of this batch, dead codes so far)."""
        codes = gather_rows(codes)  # every rank counts the global batch's codes
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
        flat = gather_rows(z_e.detach()).permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
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
        flat = gather_rows(z_e.detach()).permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()
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
