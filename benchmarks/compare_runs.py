"""Two workspaces' results, value by value: a refactor must change no number (issue 28).

Run the default pipeline in two clones (e.g. before and after a change, each alone on the machine), then
`.venv/bin/python benchmarks/compare_runs.py BEFORE AFTER [--out result.json]`. Every value in metrics/**.json and
reports/registry/*.json is compared except the timed ones (speeds, latencies, wall times) and run identities; it
prints a headline table per family and the differing values, and exits 1 when any untimed value differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TIMED = ("per_s", "latency", "wall_s", "export_s")
IDENTITIES = ("run_id", "decided_at", "version", "experiment_id")
HEADLINE = ("fid", "recall", "precision", "test_nll_bpd", "train_steps")


def flat(value: object, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': [1]}} -> {'a.b.0': 1}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value}


def compared(key: str) -> bool:
    last = key.split(".")[-1]
    return not (any(t in last for t in TIMED) or last.endswith("_s") or any(i in last for i in IDENTITIES))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    files = sorted(p.relative_to(args.before) for p in (args.before / "metrics").rglob("*.json"))
    files += sorted(p.relative_to(args.before) for p in (args.before / "reports" / "registry").glob("*.json"))
    total, differing, table = 0, [], {}
    for rel in files:
        before = json.loads((args.before / rel).read_text())
        after = json.loads((args.after / rel).read_text()) if (args.after / rel).is_file() else {}
        a, b = flat(before), flat(after)
        for key, value in a.items():
            if compared(key):
                total += 1
                if b.get(key) != value:
                    differing.append({"file": str(rel), "key": key, "before": value, "after": b.get(key)})
        if rel.parent == Path("metrics") and rel.stem != "evaluator":
            table[rel.stem] = {k: [before.get(k), after.get(k)] for k in HEADLINE if k in before}
    print("| family | " + " | ".join(f"{k} before | after" for k in HEADLINE) + " |")
    print("|---" * (1 + 2 * len(HEADLINE)) + "|")
    for family, values in table.items():
        cells = [f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))
                 for k in HEADLINE for v in values.get(k, [None, None])]
        print(f"| {family} | " + " | ".join(cells) + " |")
    print(f"\n{total} untimed values compared in {len(files)} files: {total - len(differing)} identical, "
          f"{len(differing)} different")
    for d in differing[:50]:
        print(f"DIFF {d['file']} {d['key']}: {d['before']} -> {d['after']}")
    if args.out:
        args.out.write_text(json.dumps({"compared": total, "different": differing, "table": table}, indent=1) + "\n")
    raise SystemExit(1 if differing else 0)


if __name__ == "__main__":
    main()
