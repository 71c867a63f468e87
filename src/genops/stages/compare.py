"""compare: one table and one set of pictures for all families, from the metrics files alone.

Reads metrics/FAMILY.json (evaluate), metrics/export/FAMILY.json (export: ONNX speed),
metrics/evaluator.json (feature space and floor) and the PNGs the evaluate stage wrote, and writes
reports/comparison/comparison.md plus charts. Nothing is recomputed, so the report can be rebuilt
anywhere the metrics are (e.g. after `dvc pull`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from genops.config import Params
from genops.errors import GenopsError
from genops.evaluation.plots import pyplot
from genops.storage.atomic import write_text_atomic

# (column title, metric key, format, better) — `better` is "min", "max" or "" (informational)
COLUMNS = [
    ("FID", "fid", "{:.2f}", "min"),
    ("KID", "kid_mean", "{:.3g}", "min"),
    ("precision", "precision", "{:.3f}", "max"),
    ("recall", "recall", "{:.3f}", "max"),
    ("density", "density", "{:.3f}", ""),
    ("coverage", "coverage", "{:.3f}", "max"),
    ("classifier score", "classifier_score", "{:.2f}", "max"),
    ("modes", "modes_covered", "{:.0f}", "max"),
    ("copies", "copy_fraction", "{:.3f}", "min"),
    ("NLL bits/dim", "test_nll_bpd", "{:.3f}", "min"),
    ("loss CV (end)", "loss_cv_last_half", "{:.3f}", "min"),
    ("loss spikes", "loss_spikes", "{:.0f}", "min"),
    ("train steps", "train_steps", "{:.0f}", ""),
    ("train PFLOPs", "train_flops", "{:.4g}", ""),
    ("train wall (s)", "train_wall_s", "{:.0f}", ""),
    ("train img/s", "train_images_per_s", "{:.0f}", "max"),
    ("sample img/s torch", "sample_images_per_s_torch", "{:.0f}", "max"),
    ("sample img/s ORT", "sample_images_per_s_onnx", "{:.0f}", "max"),
    ("batch-1 ms ORT", "sample_batch1_latency_ms_onnx", "{:.2f}", "min"),
    ("params (k)", "num_parameters", "{:.0f}", ""),
    ("samples scored", "n_samples", "{:.0f}", ""),
]
# Columns shown with their bootstrap interval (`KEY_low`, `KEY_high` in the metrics) next to the value.
WITH_INTERVAL = {"fid"}


def _fmt(value, fmt: str, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "num_parameters":
        value = value / 1e3
    if key == "train_flops":
        value = value / 1e15
    return fmt.format(value)


def load_rows(root: Path, families: list[str]) -> tuple[dict[str, dict], dict]:
    """Metrics of the families evaluated so far (a `--families` subset run leaves others out)."""
    rows = {}
    for fam in families:
        path = root / "metrics" / f"{fam}.json"
        if not path.is_file():
            continue
        row = json.loads(path.read_text())
        export = root / "metrics" / "export" / f"{fam}.json"
        if export.is_file():
            row.update(json.loads(export.read_text()))
        rows[fam] = row
    if not rows:
        raise GenopsError(f"no metrics/FAMILY.json under {root} for {', '.join(families)}: run `genops evaluate` first")
    ev_path = root / "metrics" / "evaluator.json"
    evaluator = json.loads(ev_path.read_text()) if ev_path.is_file() else {}
    return rows, evaluator


def table_markdown(rows: dict[str, dict], evaluator: dict) -> str:
    head = "| family | " + " | ".join(f"{t} {'↓' if b == 'min' else '↑' if b == 'max' else ''}".rstrip()
                                      for t, _, _, b in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    best = {}
    for _, key, _, better in COLUMNS:
        vals = [r[key] for r in rows.values() if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        if better and len(vals) > 1:
            best[key] = min(vals) if better == "min" else max(vals)
    for fam, row in rows.items():
        cells = []
        for _, key, fmt, _ in COLUMNS:
            text = _fmt(row.get(key), fmt, key)
            text = f"**{text}**" if key in best and row.get(key) == best[key] else text
            cells.append(text + _interval(row, key, fmt))
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    if evaluator:
        floor = {k[len("floor_"):]: v for k, v in evaluator.items() if k.startswith("floor_")}
        floor["n_samples"] = evaluator.get("n_floor")
        cells = [_fmt(floor.get(key), fmt, key) for _, key, fmt, _ in COLUMNS]
        lines.append("| *real data (floor)* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(row: dict, key: str, fmt: str) -> str:
    """` [low, high]` for a column in WITH_INTERVAL whose metrics have an interval, else ''."""
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if key not in WITH_INTERVAL or not isinstance(low, int | float) or not isinstance(high, int | float):
        return ""
    return f" [{_fmt(low, fmt, key)}, {_fmt(high, fmt, key)}]"


def _notes(rows: dict[str, dict]) -> list[str]:
    """What the interval and the copies column mean, with the held-out baseline of the copy fraction."""
    notes = []
    boot = next((r for r in rows.values() if isinstance(r.get("fid_low"), int | float)), None)
    if boot:
        notes.append(f"FID [low, high] is a {boot.get('bootstrap_level', 0.95):.0%} bootstrap interval over the "
                     f"family's own sample draw ({boot.get('bootstrap_samples', 0):.0f} resamples of its samples; "
                     "the real reference set is fixed and common to all families).")
    copies = next((r for r in rows.values() if isinstance(r.get("test_copy_fraction"), int | float)), None)
    if copies:
        notes.append("copies = share of samples that are near-copies of training images: nearer (pixel L2) to "
                     "their nearest training image than the `evaluate.copy_quantile` quantile of held-out test "
                     f"images' nearest-neighbour distances; held-out test images themselves score "
                     f"{copies['test_copy_fraction']:.3f} (the baseline); far above it means memorisation.")
    return [" ".join(notes), ""] if notes else []


def _bar_charts(rows: dict[str, dict], evaluator: dict, path: Path) -> Path:
    plt = pyplot()

    panels = [("FID (lower is better)", "fid"), ("recall / coverage", ("recall", "coverage")),
              ("sampling images/s (log)", ("sample_images_per_s_torch", "sample_images_per_s_onnx")),
              ("training images/s", "train_images_per_s")]
    fams = list(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys) in zip(axes, panels):
        keys = (keys,) if isinstance(keys, str) else keys
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            vals = [rows[f].get(key) or 0.0 for f in fams]
            label = key.replace("sample_images_per_s_", "")
            err = [[max(0.0, v - rows[f].get(f"{key}_low", v)) for f, v in zip(fams, vals)],
                   [max(0.0, rows[f].get(f"{key}_high", v) - v) for f, v in zip(fams, vals)]]
            ax.bar([x + i * width for x in range(len(fams))], vals, width, label=label,
                   yerr=err if key in WITH_INTERVAL else None, capsize=3)
            floor = evaluator.get(f"floor_{key}")
            if floor is not None:
                ax.axhline(floor, ls="--", lw=1, color=f"C{i}", alpha=0.7)
        ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(fams))], fams, rotation=20)
        ax.set_title(title)
        if "log" in title:
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle("genops: families side by side (dashed = real-data floor)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def variant_table(rows: dict[str, dict]) -> dict[str, list[tuple[str, float, float, float]]]:
    """family -> [(variant, fid, recall, images/s)] for families that report sampling variants."""
    out: dict[str, list[tuple[str, float, float, float]]] = {}
    for fam, row in rows.items():
        names = sorted({k[: -len("_images_per_s")] for k in row if k.endswith("_images_per_s")
                        and f"{k[: -len('_images_per_s')]}_fid" in row})
        if names:
            out[fam] = sorted(((n, row[f"{n}_fid"], row.get(f"{n}_recall", float("nan")), row[f"{n}_images_per_s"])
                               for n in names), key=lambda v: -v[3])
    return out


def _variant_curves(variants: dict[str, list], path: Path) -> Path | None:
    """Quality against sampling speed, one line per family (e.g. DDIM steps vs DDPM-T)."""
    if not variants:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for fam, points in variants.items():
        ax.plot([p[3] for p in points], [p[1] for p in points], "o-", label=fam)
        for name, fid, _, speed in points:
            ax.annotate(name, (speed, fid), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("sampling images/s (log)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("quality vs sampling speed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(rows: dict[str, dict]) -> dict[str, list[dict]]:
    """family -> its quality-vs-compute points, for families with a curve (snapshots and the end)."""
    return {fam: row["curve"] for fam, row in rows.items() if len(row.get("curve") or []) > 1}


def _compute_curves(rows: dict[str, dict], path: Path) -> Path | None:
    """FID and recall against training FLOPs, every family on the same axes (from the evaluate stage's curve)."""
    curves = _curves(rows)
    if not curves:
        return None
    plt = pyplot()

    fig, (ax_fid, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (fam, points) in enumerate(curves.items()):
        flops = [p["flops"] / 1e15 for p in points]
        ax_fid.plot(flops, [p["fid"] for p in points], "o-", color=f"C{i}", label=fam)
        ax_rec.plot(flops, [p.get("recall", float("nan")) for p in points], "o-", color=f"C{i}", label=fam)
    for ax, what in ((ax_fid, "FID (lower is better, log)"), (ax_rec, "recall (higher is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("training PFLOPs (log)")
        ax.set_ylabel(what)
    ax_fid.set_yscale("log")
    ax_fid.legend(fontsize=7)
    fig.suptitle("quality against training compute (snapshots part-way through each family's budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _compute_table(rows: dict[str, dict]) -> list[str]:
    """FID at each fraction of the budget, per family, and whether it was still improving at the end."""
    curves = _curves(rows)
    if not curves:
        return []
    # Snapshot steps are round(fraction x steps), so the exact fraction differs a little between families: the
    # columns are the nominal fractions (two decimals), which is what train.snapshots asked for.
    fractions = sorted({round(p["fraction"], 2) for points in curves.values() for p in points})
    lines = ["| family | PFLOPs trained | steps | " + " | ".join(f"FID at {f:.0%}" for f in fractions)
             + " | gain since the last snapshot |", "|---" * (len(fractions) + 4) + "|"]
    for fam, points in curves.items():
        at = {round(p["fraction"], 2): p["fid"] for p in points}
        gain = (points[-2]["fid"] - points[-1]["fid"]) / points[-2]["fid"] if points[-2]["fid"] else float("nan")
        budget = rows[fam].get("budget") or {}
        lines.append(f"| {fam} | {budget.get('total_flops', float('nan')) / 1e15:.3g} | {budget.get('steps', '–')} | "
                     + " | ".join(f"{at[f]:.1f}" if f in at else "–" for f in fractions) + f" | {gain:+.0%} |")
    return lines


def _side_by_side(root: Path, families: list[str], name: str, path: Path) -> Path | None:
    """Each family's PNG (samples or interpolation) in one figure, titled."""
    plt = pyplot()
    from PIL import Image

    found = [(f, root / "reports" / f / "eval" / name) for f in families]
    found = [(f, p) for f, p in found if p.is_file()]
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 4.3), squeeze=False)
    for ax, (fam, png) in zip(axes[0], found):
        ax.imshow(Image.open(png))
        ax.set_title(fam)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_to_mlflow(root: Path, out: Path, rows: dict[str, dict], experiment: str) -> str:
    """A `comparison` run holding the report and every family's headline numbers."""
    import mlflow

    from genops.tracking.store import context_tags, git_commit, setup_mlflow

    setup_mlflow(root, experiment)
    with mlflow.start_run(run_name="comparison") as run:
        mlflow.set_tags({"genops.kind": "comparison", "genops.git_commit": git_commit(root), **context_tags()})
        for fam, row in rows.items():
            mlflow.log_metrics({f"{fam}.{key}": float(row[key]) for _, key, _, _ in COLUMNS
                                if isinstance(row.get(key), int | float) and math.isfinite(row[key])})
        mlflow.log_artifacts(str(out), artifact_path="comparison")
    return run.info.run_id


def compare_stage(params: Params, root: Path, log_mlflow: bool = False) -> dict:
    wanted = params.all_families()
    rows, evaluator = load_rows(root, wanted)
    missing = [f for f in wanted if f not in rows]
    families = list(rows)
    out = root / "reports" / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    charts = _bar_charts(rows, evaluator, out / "metrics.png")
    samples = _side_by_side(root, families, "samples.png", out / "samples.png")
    interps = _side_by_side(root, families, "interpolation.png", out / "interpolations.png")
    variants = variant_table(rows)
    curves = _variant_curves(variants, out / "quality_vs_speed.png")
    compute = _compute_curves(rows, out / "quality_vs_compute.png")
    space = evaluator.get("feature_space", "unknown")
    acc = evaluator.get("test_accuracy")
    lines = [
        "# genops: generative families compared", "",
        f"Sample metrics use {evaluator.get('n_floor', '?')} samples per family (fewer where a slow sampler has "
        f"its own budget: column 'samples scored'; FID/KID are then biased upwards) against "
        f"{evaluator.get('n_reference', '?')} real training images, in the feature space of the "
        + (f"in-domain evaluator classifier (test accuracy {acc:.4f})." if space == "classifier" and acc is not None
           else "seeded random-weight evaluator (the data is unlabeled: Naeem et al. 2020)."),
        "The last row is real held-out data scored the same way: what a perfect generator would get.", "",
        table_markdown(rows, evaluator), "",
        *_notes(rows),
        "Reading it: FID/KID = quality and diversity together; precision = samples look real; recall and "
        "coverage = the real data's variety is reproduced; modes = classes that get at least half their share "
        "of samples (mode collapse shows here); NLL = test likelihood where the family has one; loss CV and "
        "spikes = training stability; speeds are measured on this machine.", "",
        "![metrics](metrics.png)", "",
    ]
    if variants:
        lines += ["## Quality against sampling speed", "",
                  "| family | sampler | FID ↓ | recall ↑ | images/s ↑ |", "|---|---|---|---|---|"]
        lines += [f"| {fam} | {name} | {fid:.2f} | {rec:.3f} | {speed:.1f} |"
                  for fam, points in variants.items() for name, fid, rec, speed in points]
        lines += ["", "(each sampler scored on `evaluate.variant_samples` samples: compare rows with each other)",
                  "", "![quality vs speed](quality_vs_speed.png)", ""]
    if compute:
        lines += ["## Quality against training compute", "",
                  "Every family trains on the same budget of FLOPs (`train.budget`; the columns 'train steps', 'train "
                  "PFLOPs' and 'train wall' above show what each got). FID here uses `evaluate.curve_samples` samples "
                  "at every point, so points compare with each other, not with the headline FID. A large gain since "
                  "the last snapshot means the family was still improving when its budget ended.", "",
                  *_compute_table(rows), "", "![quality vs compute](quality_vs_compute.png)", ""]
    if samples:
        lines += ["## Samples", "", "![samples](samples.png)", ""]
    if interps:
        lines += ["## Latent interpolations", "", "![interpolations](interpolations.png)", ""]
    if missing:
        lines += [f"Not evaluated yet (no metrics file): {', '.join(missing)}.", ""]
    warnings = [f"- {fam}: {w}" for fam, r in rows.items() for w in r.get("warnings", [])]
    if warnings:
        lines += ["## Warnings", "", *warnings, ""]
    report = out / "comparison.md"
    write_text_atomic(report, "\n".join(lines))
    run_id = _log_to_mlflow(root, out, rows, params.tracking.experiment) if log_mlflow else None
    return {"report": str(report), "figures": [str(p) for p in (charts, samples, interps, curves, compute) if p],
            "families": families, "mlflow_run_id": run_id}
