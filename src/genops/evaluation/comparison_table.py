"""The comparison report's text: one table for all families (best value of each column in bold, the real-data
floor as the last row), sampler and compute tables, and the notes that say how to read them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from genops.errors import GenopsError

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


def table_notes(rows: dict[str, dict]) -> list[str]:
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


def compute_points(rows: dict[str, dict]) -> dict[str, list[dict]]:
    """family -> its quality-vs-compute points, for families with a curve (snapshots and the end)."""
    return {fam: row["curve"] for fam, row in rows.items() if len(row.get("curve") or []) > 1}


def compute_table(rows: dict[str, dict]) -> list[str]:
    """FID at each fraction of the budget, per family, and whether it was still improving at the end."""
    curves = compute_points(rows)
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



def report_markdown(rows: dict[str, dict], evaluator: dict, figures: dict[str, Path | None],
                    missing: list[str]) -> str:
    """reports/comparison/comparison.md: the table, its notes, and a section for each figure drawn."""
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
        *table_notes(rows),
        "Reading it: FID/KID = quality and diversity together; precision = samples look real; recall and "
        "coverage = the real data's variety is reproduced; modes = classes that get at least half their share "
        "of samples (mode collapse shows here); NLL = test likelihood where the family has one; loss CV and "
        "spikes = training stability; speeds are measured on this machine.", "",
        "![metrics](metrics.png)", "",
    ]
    variants = variant_table(rows)
    if variants:
        lines += ["## Quality against sampling speed", "",
                  "| family | sampler | FID ↓ | recall ↑ | images/s ↑ |", "|---|---|---|---|---|"]
        lines += [f"| {fam} | {name} | {fid:.2f} | {rec:.3f} | {speed:.1f} |"
                  for fam, points in variants.items() for name, fid, rec, speed in points]
        lines += ["", "(each sampler scored on `evaluate.variant_samples` samples: compare rows with each other)",
                  "", "![quality vs speed](quality_vs_speed.png)", ""]
    if figures.get("quality_vs_compute"):
        lines += ["## Quality against training compute", "",
                  "Every family trains on the same budget of FLOPs (`train.budget`; the columns 'train steps', 'train "
                  "PFLOPs' and 'train wall' above show what each got). FID here uses `evaluate.curve_samples` samples "
                  "at every point, so points compare with each other, not with the headline FID. A large gain since "
                  "the last snapshot means the family was still improving when its budget ended.", "",
                  *compute_table(rows), "", "![quality vs compute](quality_vs_compute.png)", ""]
    if figures.get("samples"):
        lines += ["## Samples", "", "![samples](samples.png)", ""]
    if figures.get("interpolations"):
        lines += ["## Latent interpolations", "", "![interpolations](interpolations.png)", ""]
    if missing:
        lines += [f"Not evaluated yet (no metrics file): {', '.join(missing)}.", ""]
    warnings = [f"- {fam}: {w}" for fam, r in rows.items() for w in r.get("warnings", [])]
    if warnings:
        lines += ["## Warnings", "", *warnings, ""]
    return "\n".join(lines)
