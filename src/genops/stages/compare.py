"""compare: one table and one set of pictures for all families, from the metrics files alone.

Reads metrics/FAMILY.json (evaluate), metrics/export/FAMILY.json (export: ONNX speed),
metrics/evaluator.json (feature space and floor) and the PNGs the evaluate stage wrote, and writes
reports/comparison/comparison.md plus charts. Nothing is recomputed, so the report can be rebuilt
anywhere the metrics are (e.g. after `dvc pull`).
"""

from __future__ import annotations

from pathlib import Path

from genops.config import Params
from genops.evaluation.comparison_charts import draw_figures
from genops.evaluation.comparison_table import load_rows, report_markdown
from genops.storage.atomic import write_text_atomic
from genops.tracking.comparison_run import log_comparison


def compare_stage(params: Params, root: Path, log_mlflow: bool = False) -> dict:
    wanted = params.all_families()
    rows, evaluator = load_rows(root, wanted)
    out = root / "reports" / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(root, rows, evaluator, out)
    report = out / "comparison.md"
    write_text_atomic(report, report_markdown(rows, evaluator, figures, [f for f in wanted if f not in rows]))
    run_id = log_comparison(root, out, rows, params.tracking.experiment) if log_mlflow else None
    return {"report": str(report), "figures": [str(p) for p in figures.values() if p],
            "families": list(rows), "mlflow_run_id": run_id}
