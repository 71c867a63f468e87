"""sweep: a params sweep of one family, the real `train` and `evaluate` commands once per value, side by side.

The default sweep is the beta-VAE's (params.yaml `sweeps`): beta in {0.5, 1, 4}, so "beta > 1 trades
reconstruction for a more factorised latent" is a measured rate-distortion curve (rate = KL to the prior,
distortion = -log p(x|z), both in nats per image on the test split; Alemi et al. 2018, "Fixing a Broken ELBO"),
with active units and FID beside it. Each value gets a scratch workspace under .genops/sweeps that shares the
project's prepared data, validation result and evaluator by hard link, trains at `budget_fraction` of the
family's budget and logs to the experiment TRACKING_EXPERIMENT-sweeps (of MLFLOW_TRACKING_URI, else the
workspace's own SQLite store; it never registers). The rows
and the picture go to reports/sweeps/FAMILY-PARAM/.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from genops.config import Params, apply_overrides, dump, load_params, validate
from genops.config.sections import SweepConfig
from genops.errors import GenopsError
from genops.evaluation.plots import pyplot
from genops.storage.atomic import atomic_dir

log = logging.getLogger(__name__)

# What the project shares with each value's workspace (identical for every value: same data and evaluator).
SHARED = ("data/prepared", "reports/validation/result.json", "checkpoints/evaluator", "metrics/evaluator.json")
COLUMNS = ("test_rate_nats", "test_distortion_nats", "test_elbo_nats", "test_nll_bpd", "active_units", "latent_dim",
           "test_recon_mse", "fid", "precision", "recall", "modes_covered", "train_steps")


def sweep_dir(root: Path, sweep: SweepConfig) -> Path:
    return Path(root) / "reports" / "sweeps" / f"{sweep.family}-{sweep.param}"


def find_sweep(params: Params, family: str, param: str) -> SweepConfig:
    for sweep in params.sweeps:
        if (sweep.family, sweep.param) == (family, param):
            return sweep
    raise GenopsError(f"no sweep of {family}.{param} in params.yaml `sweeps` "
                      f"({', '.join(f'{s.family}.{s.param}' for s in params.sweeps) or 'none'})")


def run_sweep(root: Path, family: str, param: str, params: Params | None = None) -> dict:
    """Train and evaluate `family` once per value of `param`; write the table, JSON and rate-distortion plot."""
    root = Path(root)
    params = params or load_params(root)
    sweep = find_sweep(params, family, param)
    if family not in params.all_families():
        raise GenopsError(f"sweeps: {family} is not a family of this project ({', '.join(params.all_families())})")
    for item in SHARED:
        if not (root / item).exists():
            raise GenopsError(f"{root / item} is missing: run prepare, validate and evaluator first (`dvc repro`)")
    rows = []
    for value in sweep.values:
        ws = _workspace(root, params, sweep, value)
        for stage in ("train", "evaluate"):
            log.info("sweep %s.%s=%s: %s", family, param, value, stage)
            _run(ws, stage, family)
        metrics = json.loads((ws / "metrics" / f"{family}.json").read_text())
        rows.append({"value": value, **{k: metrics.get(k) for k in COLUMNS}})
    result = {"family": family, "param": param, "budget_fraction": sweep.budget_fraction, "rows": rows}
    with atomic_dir(sweep_dir(root, sweep)) as out:
        (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "sweep.md").write_text(_markdown(result))
        _plot(result, out / "rate_distortion.png")
    log.info("sweep %s.%s: %s", family, param, [(r["value"], r["test_rate_nats"], r["test_distortion_nats"])
                                                for r in rows])
    return result


def _run(ws: Path, stage: str, family: str) -> None:
    """`genops STAGE FAMILY` in the value's workspace, as DVC runs a stage: a command, not an import (stages never
    import one another), its output streamed to ours."""
    exe = Path(sys.executable).parent / "genops"
    cmd = [str(exe) if exe.is_file() else "genops", stage, family]
    env = {**os.environ, "GENOPS_ROOT": str(ws)}
    env.pop("DVC_ROOT", None)
    # The command's JSON result goes to our stderr with its log: our stdout is the caller's (`genops pipeline`
    # prints its summary there), and the result is read back from the workspace's files.
    proc = subprocess.run(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stdout)
    code = proc.returncode
    if code:
        raise GenopsError(f"sweep: `genops {stage} {family}` in {ws} exited with {code} (its output is above)")


def _workspace(root: Path, params: Params, sweep: SweepConfig, value) -> Path:
    """.genops/sweeps/FAMILY-PARAM=VALUE: params.yaml with the value and the reduced budget, shared inputs linked."""
    ws = root / ".genops" / "sweeps" / f"{sweep.family}-{sweep.param}={value}"
    train = params.train
    # The sweep compares values with each other: no quality-vs-compute snapshots, no bootstrap intervals and a
    # single importance sample (the bound becomes the ELBO, which is what rate + distortion add up to).
    overrides: dict = {f"{sweep.family}.{sweep.param}": value, "train.snapshots": [], "evaluate.bootstrap": 0,
                       "evaluate.iw_samples": 1, "tracking.experiment": f"{params.tracking.experiment}-sweeps",
                       "versioning.commit": False}
    if train.steps is not None:
        overrides["train.steps"] = max(1, round(train.steps * sweep.budget_fraction))
    else:
        overrides["train.budget"] = train.budget * sweep.budget_fraction
    try:
        swept = validate(apply_overrides(dump(params), overrides), f"sweeps: {sweep.family}.{sweep.param}={value}")
    except Exception as exc:  # a value the family's config refuses: say which
        raise GenopsError(f"sweeps: {sweep.family}.{sweep.param}={value!r} is not valid: {exc}") from None
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(dump(swept), sort_keys=False))
    for item in SHARED:
        _link(root / item, ws / item)
    return ws


def _link(src: Path, dst: Path) -> None:
    """Hard links (no copy of the data; read-only use), a copy where links cannot cross file systems."""
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(str(src), str(dst))


def _markdown(result: dict) -> str:
    head = ["value", "rate (KL, nats)", "distortion (nats)", "-ELBO", "active units", "FID", "recall"]
    lines = [f"# {result['family']}.{result['param']} sweep", "",
             f"Each value trained for {result['budget_fraction']:.0%} of the family's budget; rate = KL(q(z|x) || "
             "N(0, I)), distortion = -log p(x|z), nats per test image.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["value"], r["test_rate_nats"], r["test_distortion_nats"], -r["test_elbo_nats"]
                 if r["test_elbo_nats"] is not None else None,
                 f"{r['active_units']:.0f} / {r['latent_dim']:.0f}" if r["active_units"] is not None else None,
                 r["fid"], r["recall"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join([*lines, "", "![rate-distortion](rate_distortion.png)", ""])


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plot(result: dict, path: Path) -> None:
    plt = pyplot()
    rows = [r for r in result["rows"] if r["test_rate_nats"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    rate, distortion = [r["test_rate_nats"] for r in rows], [r["test_distortion_nats"] for r in rows]
    ax.plot(rate, distortion, "o-", color="tab:blue")
    for r in rows:
        label = f"{result['param']}={r['value']}"
        if r["active_units"] is not None:
            label += f" ({r['active_units']:.0f} active)"
        ax.annotate(label, (r["test_rate_nats"], r["test_distortion_nats"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion: -log p(x|z), nats")
    ax.set_title(f"{result['family']}: rate-distortion over {result['param']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
