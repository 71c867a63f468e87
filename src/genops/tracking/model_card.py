"""The model card registered with every version: what the model is, its data, lineage, metrics and limits."""

from __future__ import annotations

import json


def model_card(family: str, name: str, meta: dict, metrics: dict, export: dict, lineage: dict) -> str:
    from genops.models.registry import family_class

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
        "## Params", "```json", json.dumps(meta["cfg"], indent=2, sort_keys=True), "```", "",
        "## Metrics", *_headline(metrics), "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float)], "",
        "## Serving",
        f"- ONNX graphs: {', '.join(export['graphs'])} (opset {export['opset']}, dynamic batch); "
        f"torch/ORT max |diff| {max(g['max_abs_diff'] for g in export['graphs'].values()):.2g}",
        f"- `genops sample {family} --n 64 --out grid.png` (ONNX Runtime) or `--backend torch`",
        *([f"- the registered model is the first graph; sampling needs the loop outside the graphs ("
           f"{info.samples_by}): use `genops sample` or `family.sample(..., nets=ORT sessions)`"]
          if info.loop_outside_graph else []), "",
        "## Limits", *[f"- {item}" for item in info.limits], "",
    ]
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
