"""CycleGAN (Zhu et al. 2017): unpaired translation between the training data A and a second image set B.

    G_AB: A -> B, G_BA: B -> A (ResNet generators); D_A, D_B (PatchGAN), least-squares GAN losses (Mao et al. 2017):
    D_X:  minimise 1/2 E (D_X(x) - 1)^2 + 1/2 E D_X(x_fake)^2        x_fake from the image history buffer
    G:    minimise E (D_B(G_AB(a)) - 1)^2 + E (D_A(G_BA(b)) - 1)^2
                   + lambda_cyc (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)      cycle consistency
                   + lambda_id  (|G_BA(a) - a|_1 + |G_AB(b) - b|_1)                  identity

One training step = one update of both generators (one optimiser, as in the paper) and one of each
discriminator. Domain B arrives through `attach_data("domain_b", ...)` (its config's `data_sources`); a step's
B batch is a seeded draw from B's training split.

Sampling must give images of the training domain A, like every family, for the common FID/recall/modes: the model
carries a bank of held-out B images (a uint8 buffer, also its own ONNX graph `source`) and translates seeded draws
of it with G_BA. `translate` maps any images either way (`genops sample cyclegan --input DIR`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genops.config.families import CycleGanConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import ExtraData, OwnFigures, OwnMetrics, Translates
from genops.models.families.adversarial import Adversarial, grad_norm
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.networks.cyclegan import ImageBank, ImageHistory, PatchDiscriminator, ResnetGenerator

log = logging.getLogger(__name__)

DIRECTIONS = {"a2b": "a_to_b", "b2a": "b_to_a"}  # translate() direction -> graph name
ROLE = "domain_b"


def lsgan_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss: real patches towards 1, fake ones towards 0."""
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def lsgan_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: the discriminator's scores on fakes towards 1."""
    return (fake - 1).pow(2).mean()


def cycle_loss(g_ab: nn.Module, g_ba: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1 (means over pixels): zero when both generators are identities."""
    return F.l1_loss(g_ba(g_ab(a)), a) + F.l1_loss(g_ab(g_ba(b)), b)


class CycleGAN(Adversarial, ExtraData, Translates, OwnMetrics, OwnFigures):
    name = "cyclegan"
    info = FamilyInfo(
        summary="CycleGAN: unpaired translation between the training data (A) and cyclegan.domain_b (B); two ResNet "
                "generators, two PatchGAN discriminators, LSGAN + cycle + identity losses.",
        samples_by="translating seeded draws of held-out domain-B images (a bank carried with the weights) into "
                   "domain A with G_BA",
        limits=["its samples are translations of a fixed bank of B images: their diversity is the bank's, not a "
                "learned distribution's", "no likelihood and no latent space",
                "under data-parallel training each rank keeps its own image history buffer"],
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss_d"

    cfg: CycleGanConfig

    def __init__(self, cfg: CycleGanConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        c, h, w = spec.shape
        self.G_ab = ResnetGenerator(c, h, w, cfg.width, cfg.downsamplings, cfg.depth)
        self.G_ba = ResnetGenerator(c, h, w, cfg.width, cfg.downsamplings, cfg.depth)
        self.D_a = PatchDiscriminator(c, list(cfg.d_widths))
        self.D_b = PatchDiscriminator(c, list(cfg.d_widths))
        self.history_a = ImageHistory(cfg.history_size, spec.shape)
        self.history_b = ImageHistory(cfg.history_size, spec.shape)
        self.bank = ImageBank(cfg.bank_size, spec.shape)
        self.domain_b: tuple[ImageSet, ImageSet] | None = None  # (train, held-out) of B, from attach_data

    # --- data ------------------------------------------------------------------------------------
    def attach_data(self, role: str, train: ImageSet, test: ImageSet) -> None:
        if role != ROLE:
            raise GenopsError(f"{self.name} takes only {ROLE!r} as extra data, not {role!r}")
        self.domain_b = (train, test)
        self._fill_bank(test)

    def _fill_bank(self, held_out: ImageSet) -> None:
        """The bank: a seeded draw of held-out B images, cycled when B holds fewer than bank_size. The same data
        gives the same bank, so re-attaching at evaluation (hash-checked) changes nothing."""
        n = len(self.bank)
        if len(held_out) < n:
            log.warning("%s: %d held-out %s images for a bank of %d: each is used about %d times", self.name,
                        len(held_out), ROLE, n, -(-n // len(held_out)))
        order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0))
        index = order[torch.arange(n) % len(held_out)]
        self.bank.images.copy_(held_out.images[index].to(self.bank.images.device))

    def _domain(self) -> tuple[ImageSet, ImageSet]:
        if self.domain_b is None:
            raise GenopsError(f"{self.name} needs its domain B images ({self.name}.{ROLE}): the train and evaluate "
                              "stages load them; in code, call attach_data('domain_b', train, test) first")
        return self.domain_b

    # --- training --------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"g_ab": self.G_ab, "g_ba": self.G_ba, "d_a": self.D_a, "d_b": self.D_b,
                "history_a": self.history_a, "history_b": self.history_b, "bank": self.bank}

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.G_ab.parameters(), *self.G_ba.parameters()]

    def discriminators(self) -> dict[str, nn.Module]:
        return {"d_a": self.D_a, "d_b": self.D_b}

    def b_batch(self, n: int, ctx: StepContext) -> torch.Tensor:
        """A seeded draw of n training images of B (this rank's rows of the global draw)."""
        train_b = self._domain()[0]
        index = ctx.noise.randint(len(train_b), n)
        return train_b.batch(index.to(train_b.images.device)).x.to(self.device)

    def g_step(self, a: torch.Tensor, b: torch.Tensor, ctx: StepContext) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """One update of both generators through frozen discriminators; returns the losses and the fakes."""
        for d in (self.D_a, self.D_b):
            d.requires_grad_(False)
        try:
            with ctx.autocast():
                fake_b, fake_a = self.G_ab(a), self.G_ba(b)
                adv = lsgan_g_loss(self.D_b(fake_b).float()) + lsgan_g_loss(self.D_a(fake_a).float())
                cyc = F.l1_loss(self.G_ba(fake_b).float(), a) + F.l1_loss(self.G_ab(fake_a).float(), b)
                idt = F.l1_loss(self.G_ba(a).float(), a) + F.l1_loss(self.G_ab(b).float(), b)
                loss = adv + self.cfg.lambda_cycle * cyc + self.cfg.lambda_identity * idt
            ctx.backward("g", loss)
            grad = grad_norm(self.G_ab, self.G_ba)
            ctx.optimizers["g"].step()
        finally:
            for d in (self.D_a, self.D_b):
                d.requires_grad_(True)
        losses = {"loss_g": loss.detach(), "loss_gan": adv.detach(), "loss_cycle": cyc.detach(),
                  "loss_identity": idt.detach(), "grad_norm_g": grad}
        return losses, fake_a.detach(), fake_b.detach()

    def d_step(self, name: str, d: nn.Module, real: torch.Tensor, fake: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """One update of discriminator `name` on real images and (history-buffered) fakes; nothing else moves."""
        with ctx.autocast():
            loss = lsgan_d_loss(d(real).float(), d(fake).float())
        ctx.backward(name, loss)
        ctx.optimizers[name].step()
        return loss.detach()

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        a = batch.x
        b = self.b_batch(a.shape[0], ctx)
        out, fake_a, fake_b = self.g_step(a, b, ctx)
        loss_d_a = self.d_step("d_a", self.D_a, a, self.history_a.query(fake_a, ctx.noise), ctx)
        loss_d_b = self.d_step("d_b", self.D_b, b, self.history_b.query(fake_b, ctx.noise), ctx)
        return {**out, "loss_d": loss_d_a + loss_d_b, "loss_d_a": loss_d_a, "loss_d_b": loss_d_b}

    # --- sampling and translation ----------------------------------------------------------------------
    def sampling_nets(self) -> dict[str, Net]:
        return {"b_to_a": self.G_ba, "a_to_b": self.G_ab, "source": self.bank}

    def bank_draws(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n bank indices: seeded permutations of the bank, one after another (each image once per pass)."""
        size = len(self.bank)
        rounds = -(-n // size)
        return torch.cat([torch.randperm(size, generator=generator) for _ in range(rounds)])[:n]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        source = nets["source"](self.bank_draws(n, generator).to(self.device))
        return nets["b_to_a"](source).clamp(0, 1)

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str,
                  nets: Mapping[str, Net] | None = None, batch_size: int = 256) -> torch.Tensor:
        if direction not in DIRECTIONS:
            raise GenopsError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
        net = (nets or self.sampling_nets())[DIRECTIONS[direction]]
        out = [net(images[i: i + batch_size].to(self.device)).clamp(0, 1).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else images.clone()

    def export_specs(self) -> list[ExportSpec]:
        image = torch.rand(2, *self.spec.shape)
        index = torch.tensor([0, len(self.bank) - 1])
        return [ExportSpec("b_to_a", self.G_ba, (image,), ["image"], ["translated"]),
                ExportSpec("a_to_b", self.G_ab, (image,), ["image"], ["translated"]),
                ExportSpec("source", self.bank, (index,), ["index"], ["image"])]

    # --- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Held-out A (`test`) and held-out B: cycle and identity L1; with the evaluator, FID of translations
        against the target domain (B's features come from the A-trained evaluator) and content preservation."""
        test_b = self._domain()[1]
        a, b = test.images.cpu().float().div(255), test_b.images.cpu().float().div(255)
        a2b, b2a = self.translate(a, "a2b", batch_size=cfg.batch_size), self.translate(b, "b2a",
                                                                                      batch_size=cfg.batch_size)
        out = {
            "cycle_l1_a": float((self.translate(a2b, "b2a", batch_size=cfg.batch_size) - a).abs().mean()),
            "cycle_l1_b": float((self.translate(b2a, "a2b", batch_size=cfg.batch_size) - b).abs().mean()),
            "identity_l1_a": float((self.translate(a, "b2a", batch_size=cfg.batch_size) - a).abs().mean()),
            "identity_l1_b": float((self.translate(b, "a2b", batch_size=cfg.batch_size) - b).abs().mean()),
            "n_translated_a": float(len(a)), "n_translated_b": float(len(b)),
        }
        out["cycle_l1"] = (out["cycle_l1_a"] + out["cycle_l1_b"]) / 2
        if evaluator is None:
            return out

        def feats(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([evaluator.features(x[i: i + cfg.batch_size]).cpu()
                              for i in range(0, len(x), cfg.batch_size)])

        fa, fb, fa2b, fb2a = feats(a), feats(b), feats(a2b), feats(b2a)
        out["translation_fid_b2a"] = evaluator.frechet(fa, fb2a)  # B -> A against held-out A
        out["translation_fid_a2b"] = evaluator.frechet(fb, fa2b)  # A -> B against held-out B
        out["untranslated_fid_b"] = evaluator.frechet(fa, fb)  # the gap translation has to close
        if evaluator.classify is not None:
            out.update(self._content(evaluator, a, test.labels, b, test_b.labels, a2b, b2a, cfg.batch_size))
        return out

    @staticmethod
    def _content(evaluator: EvaluatorView, a, ya, b, yb, a2b, b2a, batch_size: int) -> dict[str, float]:
        """The evaluator's class of a translation equals its source's label (labelled rows only), and the same for
        the untranslated images: the baseline that shows whether translation helps the classifier recognise B."""
        def predicted(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([evaluator.classify(x[i: i + batch_size]).argmax(1).cpu()
                              for i in range(0, len(x), batch_size)])

        out = {}
        for name, images, labels in (("b2a", b2a, yb), ("a2b", a2b, ya)):
            keep = labels.cpu() >= 0
            if keep.any():
                out[f"content_kept_{name}"] = float((predicted(images[keep]) == labels.cpu()[keep]).double().mean())
        for name, images, labels in (("b", b, yb), ("a", a, ya)):
            keep = labels.cpu() >= 0
            if keep.any():
                out[f"content_untranslated_{name}"] = float(
                    (predicted(images[keep]) == labels.cpu()[keep]).double().mean())
        return out

    def figures(self, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        """translation.png: rows of held-out B images, their translation to A, and the cycle back to B."""
        source = self.bank(self.bank_draws(min(8, len(self.bank)), generator).to(self.device))
        translated = self.translate(source, "b2a")
        back = self.translate(translated, "a2b")
        return {"translation": (torch.cat([source.cpu(), translated, back]), len(source))}
