"""Each family's typed configuration, and the registry: family name -> config class + implementation.

The config classes are torch-free, so params.yaml is validated before any stage (or torch) starts.
Adding a family: its module under genops/models/families/, its config class here, one line in
`FAMILIES`, and its section in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from genops.config.section import Section, field
from genops.config.sections import EvaluateBudget

SIZE_PROFILES = ("tiny", "smoke", "gpu")


class FamilyConfig(Section):
    """What every family section has: conditioning, its share of the step budget, its learning rate and its
    evaluation budget."""

    conditional: bool = field(False, "true = class-conditional (needs labeled data)")
    steps: int | None = field(None, "this family's own step count; null = from train.budget (or train.steps)", ge=1)
    lr: float | None = field(None, "Adam learning rate; null = train.lr", gt=0)
    evaluate: EvaluateBudget = field(EvaluateBudget(), "this family's own evaluation budget (keys of `evaluate`)",
                                     training=False)

    # The family's sizes per profile, declared beside its fields: "tiny" (the tests), "smoke" (`genops pipeline
    # --smoke`) and "gpu" (`--profile gpu`): its own keys over the defaults, dotted for nested ones
    # ("evaluate.n_samples"). Every registered config class declares its own (tests/config checks it). Widths and
    # depths follow one scheme: `widths` = channels per resolution level, `width` = one width throughout, `depth` =
    # layers or blocks (per level where there are levels), with a prefix for a second network (`prior_`, `d_`).
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def sized(cls, profile: str) -> dict[str, Any]:
        """This family's keys at `profile` as a nested mapping (what `build_family(name, spec, cfg)` takes)."""
        if profile not in SIZE_PROFILES:
            raise ValueError(f"size profile {profile!r}: expected one of {', '.join(SIZE_PROFILES)}")
        out: dict[str, Any] = {}
        for key, value in cls.sizes[profile].items():
            *parents, leaf = key.split(".")
            node = out
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
        return out

    def learning_rate(self, train_lr: float) -> float:
        return self.lr if self.lr is not None else train_lr

    def data_sources(self) -> dict[str, str]:
        """Data the family trains on besides `data.source`, by role (role -> any source `data.source` accepts): the
        train and evaluate stages load each, converted to the main data's shape, and hand it to the family through
        `Family.attach_data`. Most families need none."""
        return {}


class StackedConfig(FamilyConfig):
    """A family trained on another family's *registered* model (see `FamilyEntry.base`)."""

    base_model: str | None = field(None, "null = models:/genops-BASE@champion; or any models:/ URI of the base family")


class MonitorSettings(Section):
    """Mode-collapse watch during training (read by the train stage through `Family.monitor`)."""

    every: int
    samples: int
    min_recall: float
    min_modes: int


class AdversarialConfig(FamilyConfig):
    """What adversarial families share: the mode-collapse watch during training (their losses say little about it)."""

    monitor_every: int = field(250, "steps between recall / modes-covered checks (a multiple of train.log_every); "
                                    "0 = off", ge=0)
    monitor_samples: int = field(256, "samples per check", ge=2)
    collapse_min_recall: float = field(0.05, "recall below this logs a mode-collapse warning", ge=0, le=1)
    collapse_min_modes: int = field(5, "fewer modes covered than this logs a mode-collapse warning", ge=0)
    lr_g: float | None = field(0.0002, "generator learning rate (TTUR); null = lr", gt=0)
    lr_d: float | None = field(0.0002, "discriminator learning rate (TTUR); null = lr", gt=0)
    betas: tuple[float, float] = field((0.5, 0.999), "Adam betas of both optimisers")

    def learning_rates(self, lr: float) -> tuple[float, float]:
        """(generator, discriminator) learning rates: lr_g and lr_d, each falling back to `lr` when null."""
        return (self.lr_g if self.lr_g is not None else lr, self.lr_d if self.lr_d is not None else lr)

    def monitor(self) -> MonitorSettings | None:
        if self.monitor_every <= 0:
            return None
        return MonitorSettings(every=self.monitor_every, samples=self.monitor_samples,
                               min_recall=self.collapse_min_recall, min_modes=self.collapse_min_modes)


# --- one config class per family -------------------------------------------------------------------


class AutoencoderConfig(FamilyConfig):
    """Deterministic conv autoencoder (MSE): the baseline that reconstructs but cannot really generate."""

    sizes = {
        "tiny": {"widths": [8, 16]},
        "smoke": {},
        "gpu": {"widths": [64, 128, 256]},
    }

    latent_dim: int = field(16, "size of the deterministic latent", ge=1)
    widths: list[int] = field([32, 64, 128], "conv channels per downsampling level", min_length=1)

    @model_validator(mode="after")
    def _unconditional(self) -> AutoencoderConfig:
        if self.conditional:
            raise ValueError("conditional: the autoencoder baseline has no conditional variant")
        return self


class VAEConfig(FamilyConfig):
    """Conv VAE with a discretised-logistic decoder; beta > 1 gives a beta-VAE, conditional a CVAE."""

    sizes = {
        "tiny": {"widths": [8, 16]},
        "smoke": {},
        "gpu": {"widths": [64, 128, 256]},
    }

    latent_dim: int = field(16, "size of the Gaussian latent", ge=1)
    widths: list[int] = field([32, 64, 128], "conv channels per downsampling level", min_length=1)
    beta: float = field(1.0, "weight of the KL term (1 = the ELBO; > 1 = beta-VAE)", ge=0)
    kl_warmup: float = field(0.0, "share of the steps over which the KL weight ramps linearly from 0 to beta "
                                  "(Bowman et al. 2016; Sonderby et al. 2016); 0 = beta from the start", ge=0, le=1)
    free_bits: float = field(0.0, "nats per latent dimension the KL term does not penalise (Kingma et al. 2016: each "
                                  "dimension's batch-mean KL counts as max(free_bits, KL_d)), against posterior "
                                  "collapse; 0 = off", ge=0)
    prior: Literal["fitted", "standard"] = field(
        "fitted", "the prior samples and the NLL bound use: fitted = after training, the Gaussian that maximises the "
                  "ELBO for the trained encoder (mean and full covariance of the aggregate posterior, Hoffman & "
                  "Johnson 2016; Tomczak & Welling 2018); standard = N(0, I), the prior it was trained against")


class GanConfig(AdversarialConfig):
    """DCGAN; one step = one D update (+ one G update every n_critic steps)."""

    sizes = {
        "tiny": {"widths": [8, 16], "monitor_every": 6, "monitor_samples": 32},
        "smoke": {"monitor_every": 20},
        "gpu": {"widths": [64, 128, 256], "monitor_every": 1000, "monitor_samples": 1024},
    }

    objective: Literal["minimax", "nonsaturating", "wgan-gp"] = field("nonsaturating",
                                                                      "minimax | nonsaturating | wgan-gp")
    latent_dim: int = field(64, "size of the generator's noise", ge=1)
    widths: list[int] = field([32, 64, 128], "conv channels per level of G and D", min_length=1)
    g_widths: list[int] | None = field(None, "generator channels; null = widths", min_length=1)
    d_widths: list[int] | None = field(None, "discriminator channels; null = widths", min_length=1)
    spectral_norm: bool = field(False, "spectral norm on every discriminator layer")
    d_norm: Literal["batch", "layer", "none"] = field("batch", "discriminator normalisation: batch | layer | none")
    n_critic: int = field(1, "discriminator steps per generator step", ge=1)
    gp_weight: float = field(10.0, "gradient-penalty weight (wgan-gp)", ge=0)

    @model_validator(mode="after")
    def _critic_norm(self) -> GanConfig:
        if self.objective == "wgan-gp" and self.d_norm == "batch":
            raise ValueError("d_norm: batch norm in a WGAN-GP critic breaks the per-sample gradient penalty; "
                             "use none or layer")
        return self


class WganGpConfig(GanConfig):
    """The same DCGAN networks with a Wasserstein critic and gradient penalty (Gulrajani et al. 2017)."""

    sizes = {
        "tiny": {"widths": [8, 16], "monitor_every": 6, "monitor_samples": 32},
        "smoke": {"monitor_every": 20},
        "gpu": {"widths": [64, 128, 256], "monitor_every": 2500, "monitor_samples": 1024},
    }

    objective: Literal["minimax", "nonsaturating", "wgan-gp"] = field("wgan-gp", "minimax | nonsaturating | wgan-gp")
    d_norm: Literal["batch", "layer", "none"] = field("none", "no batch norm in a WGAN-GP critic")
    # Two time-scale updates (Heusel et al. 2017: WGAN-GP with TTUR, one critic step at 3x the generator's rate)
    # instead of Gulrajani et al.'s 5 critic steps at equal rates: at an equal FLOP budget (8e12) the generator gets
    # 1,440 updates instead of 387, and FID fell from 226 to 86, recall from 0.30 to 0.80, modes from 7 to 9.
    n_critic: int = field(1, "critic steps per generator step (Gulrajani et al.: 5)", ge=1)
    lr_g: float | None = field(0.0001, "generator learning rate; null = lr", gt=0)
    lr_d: float | None = field(0.0003, "critic learning rate (TTUR: above the generator's); null = lr", gt=0)
    betas: tuple[float, float] = field((0.0, 0.9), "Adam betas (Gulrajani et al.)")
    monitor_every: int = field(500, "steps between recall / modes-covered checks; 0 = off", ge=0)


class StyleGanConfig(AdversarialConfig):
    """A small StyleGAN2 (Karras et al. 2019, 2020): mapping network z -> w, modulated/demodulated convolutions
    driven by per-layer styles, per-layer noise, style-mixing regularisation, lazy R1, EMA generator, truncation.
    CPU-sized; on a GPU widen `widths` (e.g. [64, 128, 256]) and `w_dim`."""

    renamed = {"mapping_layers": "mapping_depth"}
    sizes = {
        "tiny": {"widths": [8, 16], "mapping_depth": 2, "monitor_every": 6, "monitor_samples": 32, "ppl_samples": 32},
        "smoke": {"monitor_every": 20, "widths": [8, 16], "mapping_depth": 2, "ppl_samples": 32},
        "gpu": {"widths": [64, 128, 256], "w_dim": 256, "latent_dim": 256, "mapping_depth": 8, "monitor_every": 1000,
                "monitor_samples": 1024, "ppl_samples": 5000},
    }

    latent_dim: int = field(64, "size of z", ge=1)
    w_dim: int = field(64, "size of w (the intermediate latent each layer's style comes from)", ge=1)
    mapping_depth: int = field(4, "layers of the mapping MLP z -> w (StyleGAN: 8)", ge=1)
    mapping_lr_mul: float = field(0.01, "learning-rate multiplier of the mapping network (equalised lr; StyleGAN: "
                                        "0.01, so w moves slowly against the synthesis network)", gt=0)
    # [16, 32, 64] on CPU: at the common FLOP budget [32, 64, 128] gets ~240 steps (3.4e10 FLOPs each) and
    # FID 434; a quarter of the cost per step gives ~950 steps and FID 209 (measured, README "StyleGAN").
    widths: list[int] = field([16, 32, 64], "synthesis channels per level, shallow (full size) -> deep; D uses "
                                            "the same unless d_widths", min_length=1)
    d_widths: list[int] | None = field(None, "discriminator channels; null = widths", min_length=1)
    noise: bool = field(True, "per-layer noise inputs (stochastic detail)")
    style_mixing: float = field(0.9, "probability that a training sample takes its styles from two z's, switching "
                                     "at a random layer (mixing regularisation)", ge=0, le=1)
    r1_gamma: float = field(0.2, "R1 penalty weight gamma on real images (Mescheder et al. 2018)", ge=0)
    r1_every: int = field(4, "lazy regularisation: R1 every this many steps, scaled up by as much", ge=1)
    ema_decay: float = field(0.995, "EMA decay of the sampling generator's weights (ramped up as (1+n)/(10+n))",
                             gt=0, lt=1)
    w_avg_beta: float = field(0.995, "EMA decay of the tracked mean w (the truncation centre)", gt=0, lt=1)
    lr_g: float | None = field(0.002, "generator learning rate (StyleGAN2: 0.002); null = lr", gt=0)
    lr_d: float | None = field(0.002, "discriminator learning rate; null = lr", gt=0)
    betas: tuple[float, float] = field((0.0, 0.99), "Adam betas (StyleGAN2)")
    truncation: float = field(1.0, "default truncation psi at sampling: w = w_avg + psi (w - w_avg); 1 = none",
                              ge=0, training=False)
    eval_truncation: list[float] = field([0.5, 0.7], "truncation values measured as sampling variants (quality "
                                                     "against diversity)", training=False)
    ppl_samples: int = field(512, "path pairs for perceptual path length in z and in w", ge=2, training=False)
    ppl_epsilon: float = field(1e-4, "step along the path for perceptual path length", gt=0, training=False)

    @model_validator(mode="after")
    def _unconditional(self) -> StyleGanConfig:
        if self.conditional:
            raise ValueError("conditional: this StyleGAN is unconditional (use gan with conditional: true)")
        return self


class DiffusionProcessConfig(FamilyConfig):
    """The forward process, training objective and samplers shared by pixel and latent diffusion."""

    timesteps: int = field(1000, "T, the length of the forward chain", ge=2)
    schedule: Literal["linear", "cosine"] = field("linear", "beta schedule: linear | cosine")
    prediction: Literal["eps", "v"] = field("eps", "what the denoiser predicts: eps | v (Salimans & Ho 2022)")
    min_snr_gamma: float = field(0.0, "min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss is "
                                      "weighted by min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v), so the many "
                                      "nearly noise-free timesteps stop dominating; 5 is the paper's; 0 = L_simple",
                                 ge=0)
    p_uncond: float = field(0.1, "label dropout for classifier-free guidance (conditional only)", ge=0, le=1)
    ema_decay: float = field(0.999, "EMA decay of the sampling weights", gt=0, lt=1)
    ema_warmup: bool = field(True, "ramp the EMA decay up as min(decay, (1+n)/(10+n))")
    warmup_steps: int = field(100, "linear learning-rate warm-up steps", ge=0)
    grad_clip: float = field(1.0, "gradient-norm clip (0 = off)", ge=0)
    clip_denoised: bool = field(True, "clip x0_hat to the data range while sampling and in the bound",
                                training=False)
    guidance: float = field(1.0, "w in eps_uncond + w (eps_cond - eps_uncond): 0 uncond, 1 cond, >1 guided",
                            training=False)
    sample_steps: int = field(50, "default sampler: this many steps", ge=1, training=False)
    sample_method: Literal["ddim", "ddpm"] = field("ddim", "default sampler: ddim | ddpm", training=False)
    eta: float = field(0.0, "DDIM stochasticity (0 = deterministic, 1 = DDPM-like)", ge=0, training=False)
    eval_steps: list[int] = field([10, 25, 50, 100], "DDIM step counts measured on the quality/speed curve",
                                  training=False)
    eval_ddpm: bool = field(True, "also measure the full T-step ancestral sampler (slow on CPU)", training=False)

    @model_validator(mode="after")
    def _steps_within_chain(self) -> DiffusionProcessConfig:
        too_long = [s for s in [self.sample_steps, *self.eval_steps] if not 1 <= s <= self.timesteps]
        if too_long:
            raise ValueError(f"sample_steps / eval_steps must lie in 1..timesteps ({self.timesteps}); "
                             f"got {', '.join(map(str, too_long))}")
        return self


class DiffusionConfig(DiffusionProcessConfig):
    """DDPM (Ho et al. 2020) on pixels; CPU-sized: on a GPU widen `widths` to [64, 128, 256]."""

    renamed = {"blocks_per_level": "depth"}
    sizes = {
        "tiny": {"widths": [8, 16], "timesteps": 20, "sample_steps": 4, "eval_steps": [2], "vlb_timesteps": 2,
                 "evaluate.n_samples": 24, "evaluate.variant_samples": 16, "evaluate.speed_samples": 8,
                 "evaluate.nll_subset": 16},
        "smoke": {"widths": [8, 16], "timesteps": 100, "sample_steps": 10, "eval_steps": [5, 10], "eval_ddpm": False,
                  "vlb_timesteps": 4, "evaluate.n_samples": 64},
        "gpu": {"widths": [64, 128, 256], "depth": 2, "dropout": 0.1, "warmup_steps": 1000, "evaluate": {},
                "eval_steps": [10, 25, 50, 100, 250]},
    }

    # At the default budget (8e12 FLOPs, 354 steps) linear / eps / L_simple gave FID 757 (DDIM-50, 500 samples,
    # half the samples noise fields); cosine + v + min-SNR-5 gave 45.1, recall 0.68 -> 0.82, modes 5 -> 9.
    schedule: Literal["linear", "cosine"] = field("cosine", "beta schedule: linear | cosine (Nichol & Dhariwal 2021: "
                                                            "keeps small images from being noise for most of T)")
    prediction: Literal["eps", "v"] = field("v", "what the denoiser predicts: eps | v (Salimans & Ho 2022)")
    min_snr_gamma: float = field(5.0, "min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss is "
                                      "weighted by min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v); 0 = L_simple", ge=0)
    widths: list[int] = field([16, 32], "U-Net channels per resolution", min_length=1)
    depth: int = field(1, "residual blocks per resolution", ge=1)
    attention_levels: list[int] = field([-1], "resolutions with self-attention (-1 = lowest; the middle always has)")
    dropout: float = field(0.0, "dropout inside residual blocks", ge=0, lt=1)
    vlb_timesteps: int = field(32, "strata of the variational-bound estimate", ge=1, training=False)
    inpaint_resample: int = field(2, "RePaint resampling passes per inpainting step (Lugmayr et al. 2022: U; 1 = "
                                     "plain replacement of the known pixels)", ge=1, training=False)
    evaluate: EvaluateBudget = field(
        EvaluateBudget(n_samples=500, variant_samples=100, speed_samples=64, nll_subset=200),
        "one network pass per sampling step: a smaller budget than one-pass families", training=False)


class LatentDiffusionConfig(DiffusionProcessConfig, StackedConfig):
    """The diffusion above in the latent space of the registered VAE (Rombach et al. 2022)."""

    renamed = {"blocks": "depth"}
    sizes = {
        "tiny": {"width": 16, "depth": 1, "timesteps": 20, "sample_steps": 4, "eval_steps": [2], "eval_ddpm": True},
        "smoke": {"width": 32, "depth": 1, "timesteps": 100, "sample_steps": 10, "eval_steps": [5, 10],
                  "eval_ddpm": False},
        "gpu": {"width": 512, "depth": 6},
    }

    width: int = field(256, "MLP denoiser width (the latent is a vector, not an image)", ge=1)
    depth: int = field(4, "residual MLP blocks", ge=1)
    lr: float | None = field(0.0005, "Adam learning rate; null = train.lr", gt=0)
    clip_denoised: bool = field(False, "latents have no fixed range: no clipping", training=False)


class DistilledDiffusionConfig(DiffusionConfig, StackedConfig):
    """Progressive distillation (Salimans & Ho 2022) of the registered `diffusion` model's DDIM sampler: a student
    that needs half the teacher's steps, halved `rounds` times. The network, schedule and parameterisation are the
    base model's (the keys of the pixel-diffusion section here are replaced by the base's when it is loaded)."""

    sizes = {
        "tiny": {"start_steps": 8, "rounds": 2},
        "smoke": {"start_steps": 8, "rounds": 2, "evaluate": {"n_samples": 64, "variant_samples": 32}},
        "gpu": {"evaluate": {}},
    }

    start_steps: int = field(64, "teacher DDIM steps the first round distils (its student samples with half)", ge=2)
    rounds: int = field(4, "halvings: the student ends at start_steps / 2^rounds steps (64 -> 32 -> 16 -> 8 -> 4)",
                        ge=1)
    lr: float | None = field(0.0005, "Adam learning rate of the student; null = train.lr", gt=0)
    warmup_steps: int = field(0, "linear learning-rate warm-up (the student starts from a trained network)", ge=0)
    eval_ddpm: bool = field(False, "also measure the full T-step ancestral sampler (of the student)", training=False)

    @model_validator(mode="after")
    def _halvings(self) -> DistilledDiffusionConfig:
        if self.start_steps % 2**self.rounds:
            raise ValueError(f"start_steps ({self.start_steps}) must be divisible by 2^rounds ({2**self.rounds}): "
                             "every round halves the steps")
        return self


class PixelCNNConfig(FamilyConfig):
    """Gated PixelCNN (van den Oord et al. 2016), 256-way softmax per sub-pixel."""

    renamed = {"hidden": "width", "layers": "depth"}
    sizes = {
        "tiny": {"width": 8, "depth": 2, "evaluate.n_samples": 16, "evaluate.speed_samples": 4},
        "smoke": {"width": 8, "depth": 2, "evaluate.n_samples": 32, "evaluate.speed_samples": 8},
        "gpu": {"width": 128, "depth": 12, "evaluate": {"n_samples": 2000, "speed_samples": 512}},
    }

    width: int = field(16, "channels per stack (CPU-sized; one pass per sub-pixel at sampling time)", ge=1)
    # Measured at the default budget (612 steps, same data and seed): lr 1e-3 -> 3e-3 took the final train bpd
    # 1.26 -> 1.16 and FID 211 -> 198 (precision 0.49 -> 0.67, recall 0.54 -> 0.73); the small gated network is
    # stable at it, and an under-trained likelihood model gains most from larger early steps.
    lr: float | None = field(0.003, "Adam learning rate; null = train.lr", gt=0)
    depth: int = field(8, "gated layers", ge=1)
    kernel: int = field(3, "kernel size (odd, >= 3)", ge=3)
    # Five undilated 3x3 layers let pixel (20, 14) of a 28 x 28 digit see 60 of the 574 pixels before it (rows
    # 15-20): strokes without a digit. Eight layers dilated 1, 2, 4, 8 see all 574 at the cost of eight plain ones.
    dilations: list[int] = field([1, 2, 4, 8], "dilation of gated layers 2, 3, ... (cycled; the first is never "
                                               "dilated): the receptive field grows by dilation x kernel//2 rows a "
                                               "layer at the cost of an undilated layer; [1] = none", min_length=1)
    evaluate: EvaluateBudget = field(EvaluateBudget(n_samples=200, speed_samples=32, variant_samples=32),
                                     "sampling is sequential: score fewer samples", training=False)

    @model_validator(mode="after")
    def _odd_kernel(self) -> PixelCNNConfig:
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd size >= 3, got {self.kernel}")
        return self


class VQVAEConfig(FamilyConfig):
    """VQ-VAE (van den Oord et al. 2017) + a gated PixelCNN prior over the code grid."""

    renamed = {"res_blocks": "depth", "prior_hidden": "prior_width", "prior_layers": "prior_depth"}
    sizes = {
        "tiny": {"widths": [8, 16], "prior_width": 8, "prior_depth": 2},
        "smoke": {"widths": [16, 32], "prior_width": 16, "prior_depth": 2},
        "gpu": {"widths": [64, 128], "prior_width": 128, "prior_depth": 12, "codebook_size": 256},
    }

    widths: list[int] = field([32, 64], "encoder channels; two downsamplings: 28 x 28 -> 7 x 7 codes", min_length=1)
    code_dim: int = field(32, "size of a codebook vector", ge=1)
    codebook_size: int = field(128, "number of codes", ge=2)
    depth: int = field(2, "residual blocks in encoder and decoder", ge=0)
    beta: float = field(0.25, "commitment loss weight", ge=0)
    ema: bool = field(True, "EMA codebook updates (no codebook gradient)")
    decay: float = field(0.99, "EMA decay of the codebook", gt=0, lt=1)
    data_init: bool = field(True, "initialise the codebook from encoder outputs of the first batch")
    reset_dead: bool = field(True, "re-seed codes unused for dead_window steps from current encoder outputs")
    dead_window: int = field(100, "steps without use after which a code is dead", ge=1)
    vq_fraction: float = field(0.5, "share of the family's steps for phase 1 (autoencoder + codebook); the rest "
                                    "trains the prior over frozen codes", gt=0, lt=1)
    prior_width: int = field(64, "prior PixelCNN channels", ge=1)
    prior_depth: int = field(6, "prior gated layers", ge=1)
    prior_kernel: int = field(3, "prior kernel size (odd, >= 3)", ge=3)
    prior_embed: int = field(32, "embedding size of a code index in the prior", ge=1)
    prior_lr: float | None = field(None, "prior learning rate; null = lr", gt=0)

    def phase_split(self, total_steps: int) -> int:
        """Steps of phase 1; both phases get at least one step or the run is refused."""
        split = round(total_steps * self.vq_fraction)
        if not 0 < split < total_steps:
            raise ValueError(f"vq_fraction={self.vq_fraction} of {total_steps} steps leaves a phase with no steps; "
                             "train longer or change vq_fraction")
        return split


class CycleGanConfig(AdversarialConfig):
    """CycleGAN (Zhu et al. 2017): unpaired translation between the training data (domain A) and `domain_b`, with
    two ResNet generators, two PatchGAN discriminators, LSGAN losses, cycle and identity losses and an image
    history buffer. CPU-sized; the GPU profile widens it."""

    renamed = {"res_blocks": "depth"}
    sizes = {
        "tiny": {"width": 4, "depth": 1, "d_widths": [4, 8], "bank_size": 16, "monitor_every": 6,
                 "monitor_samples": 32},
        "smoke": {"width": 8, "depth": 1, "d_widths": [8, 16], "bank_size": 64, "monitor_every": 20},
        "gpu": {"width": 64, "depth": 6, "d_widths": [64, 128, 256], "monitor_every": 1000, "monitor_samples": 1024},
    }

    domain_b: str = field("digits", "domain B: any source data.source accepts (mnist5k, digits, a folder of images, "
                                    "an .npz), converted to the main data's size and channels; split with "
                                    "data.test_fraction")
    width: int = field(16, "generator channels at full resolution (doubled at each downsampling)", ge=1)
    downsamplings: int = field(2, "stride-2 convolutions before the residual blocks (and as many upsamplings after)",
                               ge=1)
    depth: int = field(3, "residual blocks at the lowest resolution (Zhu et al.: 6 at 128 px, 9 at 256 px)", ge=0)
    d_widths: list[int] = field([16, 32], "PatchGAN discriminator channels, one stride-2 4x4 conv each (then a 3x3 "
                                          "conv to one score per patch)", min_length=1)
    lambda_cycle: float = field(10.0, "weight of the cycle-consistency L1 losses |G_BA(G_AB(a)) - a| + "
                                      "|G_AB(G_BA(b)) - b|", ge=0)
    lambda_identity: float = field(5.0, "weight of the identity L1 losses |G_BA(a) - a| + |G_AB(b) - b| (Zhu et al.: "
                                        "0.5 x lambda_cycle); keeps colours and content", ge=0)
    history_size: int = field(50, "image history buffer per discriminator (Shrivastava et al. 2017): D sees a past "
                                  "fake with probability 0.5 once it is full; 0 = off", ge=0)
    bank_size: int = field(256, "held-out domain-B images carried with the weights (and the ONNX `source` graph): "
                                "sampling translates seeded draws of them into domain A (cycled if B holds fewer)",
                           ge=1)

    def data_sources(self) -> dict[str, str]:
        return {"domain_b": self.domain_b}

    @model_validator(mode="after")
    def _unconditional(self) -> CycleGanConfig:
        if self.conditional:
            raise ValueError("conditional: CycleGAN translates images; it has no class-conditional variant")
        return self


# --- the registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyEntry:
    """A registered family: its config class, its implementation ("module:Class", imported lazily), and for a
    stacked family the family whose registered model it trains on."""

    config: type[FamilyConfig]
    impl: str
    base: str | None = None


FAMILIES: dict[str, FamilyEntry] = {
    "autoencoder": FamilyEntry(AutoencoderConfig, "genops.models.families.autoencoder:Autoencoder"),
    "vae": FamilyEntry(VAEConfig, "genops.models.families.vae:VAE"),
    "gan": FamilyEntry(GanConfig, "genops.models.families.gan:GAN"),
    "wgan-gp": FamilyEntry(WganGpConfig, "genops.models.families.gan:GAN"),
    "stylegan": FamilyEntry(StyleGanConfig, "genops.models.families.stylegan:StyleGAN"),
    "diffusion": FamilyEntry(DiffusionConfig, "genops.models.families.diffusion:Diffusion"),
    "latent-diffusion": FamilyEntry(LatentDiffusionConfig, "genops.models.families.latent_diffusion:LatentDiffusion",
                                    base="vae"),
    "diffusion-distilled": FamilyEntry(DistilledDiffusionConfig,
                                       "genops.models.families.distilled_diffusion:DistilledDiffusion",
                                       base="diffusion"),
    "pixelcnn": FamilyEntry(PixelCNNConfig, "genops.models.families.pixelcnn:PixelCNN"),
    "vqvae": FamilyEntry(VQVAEConfig, "genops.models.families.vqvae:VQVAE"),
    "cyclegan": FamilyEntry(CycleGanConfig, "genops.models.families.cyclegan:CycleGAN"),
}


def registered_name(cfg: FamilyConfig) -> str | None:
    """The registered family `cfg` configures (each registered family has its own config class), else None."""
    return next((name for name, entry in FAMILIES.items() if type(cfg) is entry.config), None)


def profile_sizes(profile: str) -> dict[str, Any]:
    """Every registered family's sizes at `profile` as params overrides ("family.key": value), in registry order:
    what params.yaml's `smoke:` and `profiles.gpu` and the tests' TINY hold for the families."""
    return {f"{name}.{key}": value for name, entry in FAMILIES.items()
            for key, value in entry.config.sizes[profile].items()}
