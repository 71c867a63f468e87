"""The shared sections of params.yaml: data, validation, training, evaluation, export, registry, schedule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, model_serializer, model_validator

from genops.config.section import Section, field


class DataConfig(Section):
    source: str = field("mnist5k", "mnist5k | digits | path/to/folder (class sub-folders = labels) | path/to/file.npz")
    image_size: int | tuple[int, int] | None = field(
        None, "null = the most common size in the data (shrunk to max_size); or an int / [h, w]")
    max_size: int = field(64, "longer side cap when image_size is null (CPU-friendly)", ge=1)
    channels: Literal["auto", 1, 3] = field("auto", "auto (3 only if some image has colour) | 1 | 3")
    test_fraction: float = field(0.2, "share of each class held out as the test split", gt=0, lt=1)
    limit: int | None = field(None, "use at most this many images (seeded subset); null = all", ge=1)
    in_memory_max_mb: float = field(2048, "prepared splits up to this size are loaded into memory; larger ones are "
                                          "read memory-mapped, batch by batch (same batches, same results)", ge=0,
                                    training=False)


class ValidationConfig(Section):
    """Thresholds of the great-expectations suite; they live here so DVC re-validates on a change."""

    min_rows: int = field(100, "fewest readable images accepted", ge=0)
    max_rows: int = field(5_000_000, "most images accepted", ge=0)
    min_per_class: int = field(10, "fewest images per class (labeled data)", ge=0)
    max_duplicate_fraction: float = field(0.05, "largest share of exact duplicate images", ge=0, le=1)
    max_unreadable_fraction: float = field(0.02, "largest share of unreadable files (they are skipped)", ge=0, le=1)
    strict: bool = field(False, "refuse any repair prepare made (a skipped unreadable file, a resized image, alpha "
                                "or colour removed) instead of naming it and going on", training=False)
    data_docs: bool = field(True, "write HTML Data Docs to reports/validation/docs", training=False)

    @model_validator(mode="after")
    def _rows(self) -> ValidationConfig:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) must not exceed max_rows ({self.max_rows})")
        return self


class DistributedConfig(Section):
    """Data-parallel training with torchrun (torch.distributed.run): the global batch is split over the processes.

    Left out of checkpoint fingerprints: n processes train the same model as one, within float rounding."""

    nproc: int = field(1, "processes per machine (one per GPU on CUDA); above 1 the train stage relaunches itself "
                          "with torchrun: gloo on CPU, NCCL on CUDA", ge=1)
    nnodes: int = field(1, "machines; above 1 run `genops train FAMILY` on each, with the same rdzv_endpoint", ge=1)
    rdzv_endpoint: str | None = field(None, "HOST:PORT of torchrun's c10d rendezvous (several machines); null = "
                                            "--standalone on this machine")
    rdzv_id: str = field("genops", "rendezvous id shared by the machines of one run", min_length=1)
    max_restarts: int = field(0, "torchrun restarts of a failed process group; each restart resumes from the last "
                                 "checkpoint", ge=0)

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @model_validator(mode="after")
    def _endpoint(self) -> DistributedConfig:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint (HOST:PORT reachable from every machine)")
        return self


class TrainConfig(Section):
    device: str = field("auto", "auto = CUDA (bf16 autocast) when a GPU is present, else CPU; or cpu | cuda[:N]")
    budget: float | None = field(
        8.0e12, "training FLOPs per family (forward + backward, counted by torch's FLOP formulas over real "
        "steps): each family trains for budget / its FLOPs per step, so every family gets the same compute", gt=0)
    steps: int | None = field(None, "steps for every family instead of the budget (quick runs, tests); null = from "
                                    "train.budget", ge=1)
    batch_size: int = field(64, "images per training step", ge=1)
    snapshots: list[float] = field([0.25, 0.5], "fractions of the steps after which the weights are kept "
                                   "(checkpoints/FAMILY/snapshots) and scored by evaluate: quality against compute")
    lr: float = field(0.001, "Adam learning rate (a family's own lr overrides it)", gt=0)
    fit_images: int = field(20000, "training images that end-of-training fits see (the autoencoder's latent "
                                   "Gaussian, the VAE's prior moments): a seeded subset of this many when the "
                                   "training split is larger, else all of it", ge=2)
    checkpoint_every: int = field(250, "steps between resumable checkpoints", ge=1, training=False)
    log_every: int = field(25, "steps between MLflow loss logs", ge=1, training=False)
    num_threads: int | None = field(None, "torch CPU threads (null = torch default)", ge=1)
    max_loss: float = field(1.0e8, "|loss| above this, or NaN, fails the run as diverged", gt=0)
    progress: bool = field(True, "show progress bars", training=False)
    compile: bool = field(False, "torch.compile every network (CUDA only; worth it for long runs)", training=False)
    channels_last: bool = field(False, "channels-last memory format for conv networks and batches (CUDA only)",
                                training=False)
    distributed: DistributedConfig = field(DistributedConfig(), "data-parallel training over processes or GPUs",
                                           training=False)

    @model_validator(mode="after")
    def _split(self) -> TrainConfig:
        if any(not 0 < f < 1 for f in self.snapshots):
            raise ValueError(f"snapshots {self.snapshots}: each is a fraction of the steps, strictly between 0 and 1")
        if self.budget is None and self.steps is None:
            raise ValueError("budget and steps are both null: set train.budget (FLOPs per family) or train.steps")
        world = self.distributed.world_size
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of the {world} training processes "
                             "(distributed.nproc x distributed.nnodes): each takes an equal share of every batch")
        return self


class EvaluatorConfig(Section):
    """The in-domain feature network for FID/KID/precision-recall/density-coverage."""

    steps: int = field(600, "classifier training steps (labeled data); unlabeled data uses seeded random weights",
                       ge=1)
    batch_size: int = field(128, "classifier batch size", ge=1)
    lr: float = field(0.001, "classifier Adam learning rate", gt=0)
    width: int = field(32, "channels of the first conv block", ge=1)
    num_features: int = field(128, "size of the penultimate feature layer the metrics use", ge=2)
    seed: int = field(0, "seed of the classifier's init and batches (and of the floor's KID subsets)")


class EvaluateConfig(Section):
    seed: int = field(1234, "fixed noise: every evaluation of a family sees the same draws")
    batch_size: int = field(256, "sampling and scoring batch size", ge=1)
    n_samples: int = field(1000, "samples per family for FID/KID/PR/DC (the floor uses as many real test images)",
                           ge=2)
    n_reference: int = field(2000, "real training images in the reference set", ge=2)
    kid_subsets: int = field(50, "KID: number of random subsets", ge=1)
    kid_subset_size: int = field(500, "KID: images per subset (capped by the set sizes)", ge=2)
    pr_k: int = field(3, "precision/recall k-NN radius (Kynkaanniemi et al. 2019)", ge=1)
    dc_k: int = field(5, "density/coverage k-NN radius (Naeem et al. 2020)", ge=1)
    mode_min_share: float = field(0.5, "a class counts as covered if it gets >= this share of its fair share",
                                  gt=0, le=1)
    grid_size: int = field(64, "samples shown in the report's grid", ge=1)
    variant_samples: int = field(200, "samples per sampling variant (e.g. DDIM step counts) for the quality/speed "
                                      "curve", ge=2)
    speed_samples: int = field(512, "samples timed for images/s", ge=1)
    inpaint_samples: int = field(200, "test images whose bottom half families that can inpaint (diffusion) complete: "
                                      "the evaluator's accuracy on the completions and their FID; 0 = skip", ge=0)
    curve_samples: int = field(128, "samples per point of the quality-vs-compute curve (the training snapshots and "
                                    "the final model; the same count for every family, as FID depends on it)", ge=2)
    iw_samples: int = field(64, "importance samples for the VAE's NLL bound", ge=1)
    nll_subset: int = field(1000, "test images used for likelihoods", ge=1)
    bootstrap: int = field(100, "bootstrap resamples of the generated samples' features for the intervals of FID, KID, "
                                "precision/recall and density/coverage (metric_low / metric_high); 0 = no intervals",
                           ge=0)
    interval: float = field(0.95, "confidence level of those intervals (and of copy_fraction's)", gt=0, lt=1)
    copy_quantile: float = field(0.01, "memorisation: a sample is a near-copy when its nearest training image (pixel "
                                       "L2) is closer than this quantile of held-out test images' nearest-neighbour "
                                       "distances to the training split", gt=0, lt=1)
    copy_reference: int | None = field(20000, "memorisation: training images searched for nearest neighbours (a "
                                              "seeded subset when the split is larger); null = all", ge=1)

    def with_budget(self, budget: Section) -> EvaluateConfig:
        """This section with a family's own `evaluate:` budget on top (see EvaluateBudget)."""
        return EvaluateConfig.model_validate({**self.model_dump(), **budget.model_dump(exclude_none=True)})


class _SparseSection(Section):
    """A section of optional overrides: only the keys that are set appear when it is written out."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


def _budget_model() -> type[Section]:
    """`EvaluateBudget`: every key of `evaluate`, optional, overriding it for one family.

    Built from EvaluateConfig so a key, its type and its description exist once; the merged result is
    validated again by EvaluateConfig (ranges included)."""
    fields = {name: (info.annotation | None, Field(None, description=info.description))
              for name, info in EvaluateConfig.model_fields.items()}
    doc = ("A family's own evaluation budget. Sampling costs differ by orders of magnitude between families "
           "(one pass vs one pass per pixel), so slow samplers may score fewer samples; the number scored is "
           "recorded with every metric.")
    return create_model("EvaluateBudget", __base__=_SparseSection, __doc__=doc, **fields)


EvaluateBudget = _budget_model()


class TrackingConfig(Section):
    """Where runs and models go in MLflow (the store itself is MLFLOW_TRACKING_URI, default sqlite in the project)."""

    experiment: str = field("genops", "MLflow experiment of the training runs and comparisons", min_length=1)
    model_prefix: str = field("genops-", "registered model names are PREFIX + family", min_length=1)
    system_metrics: bool = field(True, "log CPU, memory, disk and network use (GPU too, with nvidia-ml-py) as MLflow "
                                       "system metrics of each training run", training=False)
    system_metrics_interval_s: float = field(10.0, "seconds between system-metric samples", gt=0, training=False)


class SweepConfig(Section):
    """A params sweep: `family` trained and evaluated once per value of `param` (a key of its section), e.g. the
    beta-VAE's rate-distortion trade-off (genops.stages.sweep; reports/sweeps)."""

    family: str = field("vae", "the family swept", min_length=1)
    param: str = field("beta", "the key of the family's section that takes each value", min_length=1)
    values: list[float | int | str] = field([0.5, 1.0, 4.0], "the values, one training each", min_length=1)
    budget_fraction: float = field(0.25, "share of train.budget (or train.steps) each value trains for", gt=0, le=1)


class VersioningConfig(Section):
    """Recording runs in git, so every registered model walks back to its exact data, params, code and outputs."""

    commit: bool = field(False, "after a successful flow run, commit dvc.lock and params.yaml (metrics, reports and "
                                "checkpoints are DVC outputs hashed there) and tag the versions registered in the run "
                                "with that commit; the scheduled retraining deployment records its runs",
                         training=False)


class ExportConfig(Section):
    opset: int = field(18, "ONNX opset", ge=7)
    atol: float = field(1.0e-4, "max |ORT - torch| on fixed inputs per graph", gt=0)
    sampler_atol: float = field(1.0e-3, "max |ORT - torch| on whole sampled images", gt=0)


class RegisterConfig(Section):
    min_improvement: float = field(0.0, "a candidate must beat @champion's primary metric by this fraction of it, "
                                        "or by the half-width of its own interval of that metric if that is larger",
                                   ge=0)
    max_copy_fraction: float | None = field(0.1, "a version whose copy_fraction (share of samples that are near-copies "
                                                 "of training images) exceeds this is never promoted; null = no limit",
                                            ge=0, le=1)


class ServingConfig(Section):
    """How a registered version serves: its environment and the work one request may ask for (recorded in the
    version's model config when it is registered; GENOPS_SERVE_MAX_WORK / GENOPS_SERVE_MAX_IMAGES override them
    where the model is served)."""

    requirements: Literal["cpu", "cuda"] = field(
        "cpu", "the version's pip requirements: cpu = onnxruntime; cuda = onnxruntime-gpu[cuda,cudnn] (ONNX Runtime's "
               "CUDA provider with its CUDA/cuDNN wheels, for a serving box with a GPU)")
    max_images: int = field(1024, "images one request may ask for (the sum of n over its rows)", ge=1)
    max_work: int = field(65536, "network evaluations one request may cost: the sum over its rows of n x the passes "
                                 "one image needs (diffusion: steps, x2 with guidance; PixelCNN: one per sub-pixel)",
                          ge=1)


class ScheduleConfig(Section):
    cron: str = field("0 3 * * 1", "retraining cron of the scheduled deployment (flows/retrain.py)")
    timezone: str = field("UTC", "time zone of the cron")


class DaskConfig(Section):
    """The Dask cluster stages fan out over (orchestration.runner: dask), through prefect-dask's DaskTaskRunner."""

    address: str | None = field(None, "null = a LocalCluster of n_workers processes; or tcp://HOST:PORT of a running "
                                      "`dask scheduler`")
    n_workers: int = field(2, "LocalCluster worker processes", ge=1)
    threads_per_stage: int = field(1, "torch/BLAS threads each stage process uses (OMP_NUM_THREADS)", ge=1)


class OrchestrationConfig(Section):
    runner: Literal["local", "dask"] = field(
        "local", "local = stages in this process or threads, a wave at a time; dask = each stage a task on a Dask "
                 "worker that starts as soon as its own upstream stages are done")
    dask: DaskConfig = field(DaskConfig(), "the Dask cluster (runner: dask)")
    max_parallel: int = field(1, "stages of a wave run at once (1 on a 2-core CPU; raise on bigger machines)", ge=1)
    in_process: bool = field(True, "with max_parallel 1, run `genops` stage commands inside the flow's process "
                                   "(saves ~8 s of interpreter + torch/mlflow start-up per stage)")
