"""Variational autoencoder (Kingma & Welling 2014), optionally class-conditional (CVAE).

    q(z | x [, y]) = N(mu, diag(exp(logvar)))          encoder
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)        reparameterisation
    p(x | z [, y]) = discretised logistic per pixel       decoder (mean and log-scale)
    loss = -E_q[log p(x | z)] + beta * KL(q || N(0, I))   the negative ELBO when beta = 1

Samples are the decoder *mean* for z ~ p(z) (sampling the per-pixel noise would only add grain).
The test NLL is an importance-weighted bound (Burda et al. 2016) with K samples.

The prior. Training uses N(0, I), but at a CPU-sized budget the aggregate posterior q(z) = E_x q(z | x) is
far from it (measured: per-dimension variances up to 2.4, so N(0, I) draws land in a corner of the latent
space and decode to malformed strokes). With `prior: fitted` the prior is then replaced by the Gaussian that
maximises the ELBO for the trained encoder: E_x KL(q(z | x) || N(m, S)) is minimised by the aggregate
posterior's moments, m = E[mu], S = Cov(mu) + E[diag(exp(logvar))] (the KL term of "ELBO surgery", Hoffman &
Johnson 2016; the aggregate posterior is the optimal prior, Tomczak & Welling 2018). The reconstruction term
is unchanged, so the ELBO can only rise; samples, the ELBO and the NLL bound all use that prior.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from genops.config.families import VAEConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.models.capabilities import FitsData, Interpolates, OwnMetrics, Traverses
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.likelihoods import (
    discretized_logistic_log_prob,
    gaussian_kl,
    gaussian_kl_per_dim,
    nats_to_bits_per_dim,
    reparameterize,
)
from genops.models.networks.graphs import LatentGaussianSampler, MeanEncoder, NoiseToImage
from genops.models.networks.vae import Decoder, Encoder

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active when Cov_x(E_q[z_d | x]) exceeds this
TRAVERSAL_ROWS = 8  # latent dimensions shown in the traversal grid (the most informative: highest KL)


class VAE(Family, FitsData, OwnMetrics, Traverses, Interpolates):
    name = "vae"
    info = FamilyInfo(
        summary="Convolutional VAE: reparameterised Gaussian latent, discretised-logistic decoder, beta-weighted KL.",
        samples_by="decoding z ~ p(z) (vae.prior: the ELBO-optimal Gaussian fitted after training, or N(0, I)); "
                   "the decoder mean is shown",
        limits=["samples are blurrier than GAN/diffusion samples: the per-pixel likelihood averages modes",
                "the NLL is an importance-weighted upper bound, not exact"],
    )
    primary_metric = Metric("fid", "min")

    cfg: VAEConfig

    def __init__(self, cfg: VAEConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.latent_dim = cfg.latent_dim
        self.beta = cfg.beta
        widths = list(cfg.widths)
        k = spec.num_classes if self.conditional else 0
        self.encoder = Encoder(spec, widths, self.latent_dim, k)
        self.decoder = Decoder(spec, widths, self.latent_dim, k)
        # The prior N(mean, chol chol^T) is part of the model: buffers are checkpointed and exported.
        self.prior = nn.Module()
        self.prior.register_buffer("mean", torch.zeros(self.latent_dim))
        self.prior.register_buffer("chol", torch.eye(self.latent_dim))

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "prior": self.prior}

    def prior_distribution(self) -> MultivariateNormal:
        return MultivariateNormal(self.prior.mean.double(), scale_tril=self.prior.chol.double())

    def posterior(self, mu: torch.Tensor, logvar: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(mu.double(), scale_tril=torch.diag_embed(torch.exp(0.5 * logvar.double())))

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return {"vae": torch.optim.Adam(params, lr=lr)}

    reparameterize = staticmethod(reparameterize)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """log p(x | z) in nats, one value per image."""
        mean, log_scale = self.decoder(z, y)
        return discretized_logistic_log_prob(x, mean.float(), log_scale.float()).flatten(1).sum(1)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        y = self.labels_of(batch)
        with ctx.autocast():
            mu, logvar = self.encoder(batch.x, y)
            z = self.reparameterize(mu.float(), logvar.float(), ctx.noise)
            rec = -self.log_likelihood(batch.x, z, y).mean()
        if self.cfg.free_bits > 0:  # Kingma et al. 2016: each dimension's batch-mean KL is charged at least free_bits
            kl_dims = gaussian_kl_per_dim(mu.float(), logvar.float()).mean(0)
            kl = kl_dims.sum()
            kl_term = kl_dims.clamp(min=self.cfg.free_bits).sum()
        else:
            kl = kl_term = gaussian_kl(mu.float(), logvar.float()).mean()
        ramp = self.cfg.kl_warmup * ctx.total_steps
        loss = rec + self.beta * min(1.0, (ctx.step + 1) / ramp if ramp else 1.0) * kl_term
        ctx.backward("vae", loss)
        ctx.optimizers["vae"].step()
        return {"loss": loss.detach(), "recon_nll": rec.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def on_train_end(self, train: ImageSet, batch_size: int) -> None:
        """Fit the prior to the aggregate posterior's moments (float64 for a stable Cholesky); see the module doc."""
        if self.cfg.prior == "standard":
            self.prior.mean.zero_()
            self.prior.chol.copy_(torch.eye(self.latent_dim))
            return
        self.train_mode(False)
        mu, logvar = train.to(self.device).map_batches(batch_size,
                                                       lambda b: self.encoder(b.x, self.labels_of(b)))[:2]
        mu, var = mu.double(), logvar.double().exp()
        cov = torch.cov(mu.T) + torch.diag(var.mean(0))
        self.prior.mean.copy_(mu.mean(0).float())
        self.prior.chol.copy_(torch.linalg.cholesky(cov).float())

    def _sampler(self) -> LatentGaussianSampler:
        return LatentGaussianSampler(NoiseToImage(self.decoder, first_output=True), self.prior.mean, self.prior.chol)

    def sampling_nets(self) -> dict[str, Net]:
        return {"sampler": self._sampler()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        noise = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        labels = self.sampling_labels(n, labels)
        args = (noise,) if labels is None else (noise, labels.to(self.device))
        return nets["sampler"](*args).clamp(0, 1)

    def export_specs(self) -> list[ExportSpec]:
        noise = torch.randn(2, self.latent_dim)
        image = torch.rand(2, *self.spec.shape)
        sampler = self._sampler()
        if self.conditional:
            label = torch.zeros(2, dtype=torch.long)
            return [ExportSpec("sampler", sampler, (noise, label), ["noise", "label"], ["image"]),
                    ExportSpec("encoder", MeanEncoder(self.encoder), (image, label), ["image", "label"],
                               ["mu", "logvar"])]
        return [ExportSpec("sampler", sampler, (noise,), ["noise"], ["image"]),
                ExportSpec("encoder", MeanEncoder(self.encoder), (image,), ["image"], ["mu", "logvar"])]

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Reconstruction MSE, ELBO, the K-sample importance-weighted NLL bound, and the latent diagnostics on the
        test split: rate (KL to N(0, I)) and distortion (-log p(x|z)) for the rate-distortion plane (Alemi et al.
        2018), KL per dimension, and active units (Burda et al. 2016) - a collapsed dimension has KL ~ 0 and
        a posterior mean that does not move with x."""
        k = cfg.iw_samples
        subset = test.head(cfg.nll_subset)
        mse, elbo, nll, distortion, count = 0.0, 0.0, 0.0, 0.0, 0
        mus, kl_dims = [], []
        for batch in subset.to(self.device).batches(cfg.batch_size):
            y = self.labels_of(batch)
            mu, logvar = self.encoder(batch.x, y)
            mus.append(mu.double())
            kl_dims.append(gaussian_kl_per_dim(mu.double(), logvar.double()).sum(0))
            mean, _ = self.decoder(mu, y)
            mse += (mean - batch.x).pow(2).flatten(1).mean(1).sum().item()
            prior, post = self.prior_distribution(), self.posterior(mu, logvar)
            z = self.reparameterize(mu, logvar, generator)
            log_lik = self.log_likelihood(batch.x, z, y).double()  # the ELBO's own draw: no extra random numbers
            distortion -= log_lik.sum().item()
            elbo += (log_lik - kl_divergence(post, prior)).sum().item()
            log_w = []
            for _ in range(k):
                z = self.reparameterize(mu, logvar, generator)
                log_w.append(self.log_likelihood(batch.x, z, y).double() + prior.log_prob(z.double())
                             - post.log_prob(z.double()))
            log_px = torch.logsumexp(torch.stack(log_w), dim=0) - torch.log(torch.tensor(float(k)))
            nll -= log_px.sum().item()
            count += batch.x.shape[0]
        nll /= count
        per_dim = (torch.stack(kl_dims).sum(0) / count).tolist()
        active = int((torch.cat(mus).var(0) > ACTIVE_UNIT_THRESHOLD).sum())
        return {"test_recon_mse": mse / count, "test_elbo_nats": elbo / count, "test_nll_nats": nll,
                "test_nll_bpd": nats_to_bits_per_dim(nll, self.spec.dims), "iw_samples": float(k),
                "nll_images": float(count), "test_rate_nats": sum(per_dim), "test_distortion_nats": distortion / count,
                "active_units": float(active), "latent_dim": float(self.latent_dim),
                **{f"kl_dim_{d:02d}": v for d, v in enumerate(per_dim)}}

    @torch.no_grad()
    def traverse(self, x: Batch, steps: int) -> torch.Tensor:
        """Vary one latent dimension at a time around the first image's posterior mean, over +-3 standard deviations
        of the prior along that axis, for the TRAVERSAL_ROWS dimensions with the highest KL on this batch."""
        y = self.labels_of(x)
        mu, logvar = self.encoder(x.x, y)
        order = gaussian_kl_per_dim(mu, logvar).mean(0).argsort(descending=True)[:TRAVERSAL_ROWS]
        scale = self.prior_distribution().covariance_matrix.diagonal().sqrt().float()
        offsets = torch.linspace(-3, 3, steps, device=mu.device)
        rows = []
        for d in order.tolist():
            z = mu[:1].repeat(steps, 1)
            z[:, d] = self.prior.mean[d] + offsets * scale[d]
            rows.append(self.decoder(z, None if y is None else y[:1].repeat(steps))[0])
        return torch.cat(rows).clamp(0, 1)

    @torch.no_grad()
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        ya, yb = self.labels_of(a), self.labels_of(b)
        za, zb = self.encoder(a.x, ya)[0], self.encoder(b.x, yb)[0]
        rows = []
        for t in torch.linspace(0, 1, steps):
            y = ya if t < 0.5 else yb
            rows.append(self.decoder((1 - t) * za + t * zb, y)[0])
        return torch.stack(rows, dim=1).flatten(0, 1).clamp(0, 1)
