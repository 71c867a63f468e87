"""A stand-in for the evaluate and register stage commands in tests/orchestration/test_prefect_ui.py.

It prints the way the real stages do (a plain line, a progress bar redrawn with carriage returns, a line in the
`genops` CLI's log format, a URL and a secret that must be masked) and writes the same files they write, with
fixed values: metrics/FAMILY.json, reports/FAMILY/eval/samples.png, checkpoints/FAMILY/run.json and
reports/registry/FAMILY.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from PIL import Image


def evaluate(root: Path, family: str) -> None:
    for pct in (0, 50, 100):  # tqdm-style: the same line redrawn
        sys.stdout.write(f"\rsampling {pct:3d}%")
        sys.stdout.flush()
        time.sleep(0.02)
    print()
    print(f"fake evaluate {family}: scored 48 samples")
    print(f"12:00:00 WARNING genops.stages.evaluate: {family}: recall is low")
    print(f"tracking at http://bob:hunter22@tracking.example:5000, token {os.environ.get('GENOPS_TEST_API_TOKEN')}")
    sys.stdout.flush()
    metrics = {"family": family, "primary_metric": "fid", "primary_direction": "min", "fid": 12.5, "recall": 0.25,
               "precision": 0.5, "n_samples": 48.0}
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / f"{family}.json").write_text(json.dumps(metrics))
    (root / "reports" / family / "eval").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "reports" / family / "eval" / "samples.png")
    (root / "checkpoints" / family).mkdir(parents=True, exist_ok=True)
    (root / "checkpoints" / family / "run.json").write_text(json.dumps({"run_id": "0123456789abcdef"}))


def register(root: Path, family: str) -> None:
    print(f"fake register {family}: version 3 -> @champion")
    (root / "reports" / "registry").mkdir(parents=True, exist_ok=True)
    (root / "reports" / "registry" / f"{family}.json").write_text(json.dumps({
        "family": family, "model": f"genops-{family}", "version": 3, "alias": "champion",
        "reason": "beats the champion", "primary_metric": "fid", "candidate_value": 12.5, "champion_value": 14.0,
        "previous_champion": 2}))


if __name__ == "__main__":
    stage, fam = sys.argv[1], sys.argv[2]
    {"evaluate": evaluate, "register": register}[stage](Path(os.environ["DVC_ROOT"]), fam)
