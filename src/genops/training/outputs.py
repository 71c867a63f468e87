"""What a training run leaves in the family's checkpoint folder: the bundle, its snapshots, history and run facts.

Later stages (evaluate, export, register) and a re-run of train read only these files, so they are written
together, through a temporary folder, once the run has finished.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

from genops.data.tensors import ImageSet
from genops.evaluation.history import write_history
from genops.models.capabilities import FitsData
from genops.models.family import Family
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.bundle import FAMILY_JSON, WEIGHTS, read_meta, save_bundle, write_meta
from genops.training.device import rng_kept

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
HISTORY = "history.csv"
RUN_JSON = "run.json"
TRAIN_JSON = "train.json"


def snapshot_steps(fractions: list[float], steps: int) -> tuple[int, ...]:
    """The steps at which `train.snapshots` (fractions of the run) keep the weights: distinct, before the end."""
    return tuple(sorted({round(f * steps) for f in fractions} - {0, steps}))


def snapshot_name(step: int) -> str:
    return f"step-{step:08d}"


def save_snapshot(folder: Path, family: Family, data: ImageSet, batch_size: int, extra: dict) -> None:
    """The family as it stands mid-run, finished like the final model (post-training fits on a copy), as a bundle.
    A resumed run keeps a snapshot it already wrote for the same fingerprint; the training run's random state is
    left untouched."""
    if (folder / WEIGHTS).is_file() and read_meta(folder).get("fingerprint") == extra["fingerprint"]:
        return
    with rng_kept(family.device):
        snap = copy.deepcopy(family)
        snap.train_mode(False)
        if isinstance(snap, FitsData):
            snap.on_train_end(data, batch_size)
        with atomic_dir(folder) as out:
            save_bundle(out, snap, extra)


def write_checkpoint(folder: Path, family: Family, extra: dict, work_snapshots: Path, steps: tuple[int, ...],
                     history: list[dict[str, float]], run: dict, facts: dict) -> None:
    """The finished family's bundle with the snapshots kept at `steps` (for the quality-vs-compute curve), its loss
    history, the MLflow run it was tracked in (`run`) and what the run did (`facts`: train.json)."""
    with atomic_dir(folder) as out:
        save_bundle(out, family, extra)
        for step in steps:
            shutil.copytree(work_snapshots / snapshot_name(step), out / SNAPSHOTS / snapshot_name(step))
        write_history(out / HISTORY, history)
        write_json_atomic(out / RUN_JSON, run)
        write_json_atomic(out / TRAIN_JSON, facts)


def checkpoint_up_to_date(folder: Path, meta: dict) -> bool:
    """Whether the finished checkpoint in `folder` was trained with exactly this fingerprint.

    DVC re-runs `train` whenever anything under src/genops/models or the family's params change (it cannot
    tell what matters); this keeps such a re-run from retraining an unaffected family. Settings outside the
    fingerprint (sampler defaults, evaluation budgets) are refreshed in family.json, weights untouched, so
    later stages and the registered model see the current ones."""
    needed = [folder / n for n in (FAMILY_JSON, WEIGHTS, RUN_JSON, TRAIN_JSON, HISTORY)]
    if not all(p.is_file() for p in needed):
        return False
    stored = read_meta(folder)
    if stored.get("fingerprint") != meta["fingerprint"]:
        return False
    if stored != meta:
        write_meta(folder, meta)
        log.info("train %s: weights up to date; refreshed the settings that do not change training", folder.name)
    log.info("train %s: checkpoint already matches these params, data and code; nothing to train", folder.name)
    return True
