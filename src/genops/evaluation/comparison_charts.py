"""The comparison report's pictures: headline metrics as bars, quality against sampling speed and against
training compute, and every family's samples side by side."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from genops.evaluation.comparison_table import WITH_INTERVAL, compute_points, variant_table
from genops.evaluation.plots import pyplot


def bar_charts(rows: dict[str, dict], evaluator: dict, path: Path) -> Path:
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


def variant_curves(variants: dict[str, list], path: Path) -> Path | None:
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


def compute_curves(rows: dict[str, dict], path: Path) -> Path | None:
    """FID and recall against training FLOPs, every family on the same axes (from the evaluate stage's curve)."""
    curves = compute_points(rows)
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


def side_by_side(root: Path, families: list[str], name: str, path: Path) -> Path | None:
    """Each family's PNG (samples or interpolation) in one figure, titled."""
    plt = pyplot()

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



def draw_figures(root: Path, rows: dict[str, dict], evaluator: dict, out: Path) -> dict[str, Path | None]:
    """Every figure of the report in `out`, by name (None where the metrics hold nothing to draw)."""
    families = list(rows)
    return {"metrics": bar_charts(rows, evaluator, out / "metrics.png"),
            "samples": side_by_side(root, families, "samples.png", out / "samples.png"),
            "interpolations": side_by_side(root, families, "interpolation.png", out / "interpolations.png"),
            "quality_vs_speed": variant_curves(variant_table(rows), out / "quality_vs_speed.png"),
            "quality_vs_compute": compute_curves(rows, out / "quality_vs_compute.png")}
