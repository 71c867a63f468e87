"""The model card registered with every version: what the model is, its data, lineage, metrics and limits."""

from __future__ import annotations

import json

from genops.models.registry import family_class
from genops.serving.generator import request_columns

# MLflow's SQL stores hold a description in VARCHAR(5000) (PostgreSQL refuses more; SQLite does not check).
DESCRIPTION_LIMIT = 5000
# The metrics a compact card (a registry description) keeps; the full card (MODEL_CARD.md) lists every metric.
HEADLINE_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "modes_covered", "classifier_score",
                    "copy_fraction", "test_copy_fraction", "test_nll_bpd", "test_elbo_nats", "test_iwae_nats",
                    "reconstruction_mse", "sample_images_per_s_torch", "sample_images_per_s_onnx", "train_steps",
                    "train_flops", "train_wall_s", "num_parameters")


def model_card(family: str, name: str, meta: dict, metrics: dict, export: dict, lineage: dict,
               floor: dict | None = None, decision: dict | None = None, compact: bool = False) -> str:
    """Markdown (the MLflow UI renders it as the version's description). `floor` is metrics/evaluator.json (what
    real held-out images score); `decision` the promotion's alias, reason and previous champion. `compact` (for
    registry descriptions, which MLflow caps at DESCRIPTION_LIMIT characters) keeps the headline metrics and
    points at MODEL_CARD.md and the run for the params instead of listing them."""
    info = family_class(family).info
    spec = meta["spec"]
    lines = [
        f"# {name}", "", info.summary, "",
        f"**Samples by:** {info.samples_by}", "",
        "## Data",
        f"- source: `{lineage['data_source']}`, data hash `{lineage['data_hash']}`",
        f"- images: {spec['channels']} x {spec['height']} x {spec['width']}, "
        f"classes: {spec['num_classes'] or 'unlabeled'}", "",
        "## Lineage",
        f"- git commit `{lineage['git_commit']}`, params hash `{lineage['params_hash']}`, "
        f"MLflow run `{lineage['run_id']}`",
        *([f"- DVC outputs: checkpoint `{lineage['dvc.checkpoint']}`, exported graphs "
           f"`{lineage.get('dvc.exported', '?')}`"] if lineage.get("dvc.checkpoint") else []),
        "- recorded runs (versioning.commit) tag this version with `genops.lineage.commit`, the commit whose "
        "dvc.lock pins these outputs: `genops restore MODEL_URI --to DIR` checks it out and pulls them",
        *([f"- trained on base model `{lineage['base.model']}` version {lineage['base.version']} "
           f"(`{lineage['base.model_uri']}`, run `{lineage['base.run_id']}`)"] if "base.model" in lineage else []),
        "",
        "## Metrics", *_headline(metrics),
        *_metrics_table({k: v for k, v in metrics.items() if not compact or k in HEADLINE_METRICS
                         or k == metrics.get("primary_metric")}, floor or {}),
        *(["", "All metrics, and the params: `artifacts/genops/MODEL_CARD.md` of this version, and its MLflow run."]
          if compact else []), "",
        *_decision(decision),
        *([] if compact else ["## Params", "```json", json.dumps(meta["cfg"], indent=2, sort_keys=True), "```", ""]),
        "## Serving",
        f"- `mlflow models serve -m models:/{name}@champion --env-manager virtualenv` (MLflow builds the "
        "version's environment from its requirements.txt and code/; genops need not be installed), then POST "
        "`{\"dataframe_records\": [{\"n\": 4, \"seed\": 0}]}` to `/invocations`: the answer's `predictions` hold "
        "one uint8 array (n x H x W[, C]) per request row",
        f"- request columns: {', '.join(f'`{c}`' for c in _columns(family, meta))} (`n`, `seed` required); the same "
        f"request and seed give the same images as `genops sample {family} --n N --seed S`",
        f"- ONNX graphs (artifacts/genops/*.onnx, usable by any ONNX tool): {', '.join(export['graphs'])} "
        f"(opset {export['opset']}, dynamic batch); torch/ORT max |diff| "
        f"{max(g['max_abs_diff'] for g in export['graphs'].values()):.2g}; the sampler loop ({info.samples_by}) runs "
        "in the model's code around them", "",
        "## Limits", *[f"- {item}" for item in info.limits], "",
    ]
    return "\n".join(lines)


def fit_description(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """`text` cut at a line boundary to fit MLflow's description column, saying so where it was cut."""
    if len(text) <= limit:
        return text
    note = "\n\n*(cut to fit the registry's description limit: the full card is MODEL_CARD.md in the artifacts)*"
    head = text[: limit - len(note)]
    return head[: head.rfind("\n")] + note


def _columns(family: str, meta: dict) -> list[str]:
    return list(request_columns(family, bool(meta["cfg"].get("conditional"))))


def _metrics_table(metrics: dict, floor: dict) -> list[str]:
    """Every numeric metric; next to it what real held-out images score (the floor), where the evaluator has it."""
    has_floor = any(f"floor_{k}" in floor for k in metrics)
    head = ["| metric | value | real data (floor) |", "|---|---|---|"] if has_floor else ["| metric | value |",
                                                                                           "|---|---|"]
    rows = []
    for k, v in sorted(metrics.items()):
        if not isinstance(v, int | float):
            continue
        cells = [k, f"{v:.6g}"]
        if has_floor:
            ref = floor.get(f"floor_{k}")
            cells.append(f"{ref:.6g}" if isinstance(ref, int | float) else "")
        rows.append("| " + " | ".join(cells) + " |")
    return head + rows


def _decision(decision: dict | None) -> list[str]:
    if not decision:
        return []
    prev, value = decision.get("previous_champion"), decision.get("champion_value")
    before = f"version {prev} ({value:.6g})" if prev and isinstance(value, int | float) else str(prev or "none")
    return ["## Promotion", f"- decision: **@{decision['alias']}** — {decision['reason']}",
            f"- previous champion: {before}", ""]


def registry_card(family: str, name: str, champion_version, champion_card: str | None) -> str:
    """The registered model's description: what the family is and how to use it, then the champion's card."""
    info = family_class(family).info
    lines = [f"# {name}", "", info.summary, "", f"**Samples by:** {info.samples_by}", "",
             f"`models:/{name}@champion` is the version to use (currently version {champion_version}); "
             f"`@challenger` is the newest version that did not beat it. Each version's description is its model "
             "card: data, params, metrics against the real-data floor, the promotion decision and lineage.", ""]
    if champion_card:
        lines += ["---", "", "## The champion's card", "", champion_card.split("\n", 1)[1].lstrip()]
    return "\n".join(lines)


def _headline(metrics: dict) -> list[str]:
    """The primary metric with its bootstrap interval, and the copy fraction with its held-out baseline."""
    lines = []
    primary = metrics.get("primary_metric")
    if isinstance(metrics.get(primary), int | float):
        text = f"- {primary} {metrics[primary]:.4g}"
        if isinstance(metrics.get(f"{primary}_low"), int | float) and isinstance(metrics.get(f"{primary}_high"),
                                                                                  int | float):
            text += (f" [{metrics[f'{primary}_low']:.4g}, {metrics[f'{primary}_high']:.4g}] "
                     f"({metrics.get('bootstrap_level', 0.95):.0%} bootstrap interval over "
                     f"{metrics.get('bootstrap_samples', 0):.0f} resamples of the generated samples)")
        lines.append(text)
    if isinstance(metrics.get("copy_fraction"), int | float):
        lines.append(f"- copy fraction {metrics['copy_fraction']:.3f}: share of samples nearer (pixel L2) to a "
                     f"training image than the threshold {metrics.get('copy_threshold', float('nan')):.3g}; "
                     f"held-out test images score {metrics.get('test_copy_fraction', float('nan')):.3f}")
    return [*lines, ""] if lines else []
