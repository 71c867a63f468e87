"""`genops` command line: thin wrappers over the stage functions.

Heavy libraries (torch, mlflow, prefect, great-expectations) are imported inside the commands that
need them, so `genops --help` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

FAMILY_COMMANDS = ("train", "evaluate", "export", "register")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genops", description="Train, evaluate, register and serve generative "
                                "image models side by side. Every command reads params.yaml at the project root.")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, family: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        if family:
            sp.add_argument("family", help="family name (see `genops families`)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value, e.g. --set train.steps=100 (repeatable)")
        return sp

    add("prepare", "read data.source, write the seeded split and metadata table to data/prepared")
    add("validate", "run the great-expectations suite on data/prepared; non-zero exit on failure")
    add("evaluator", "train the in-domain evaluator network (features for FID/KID/PR/DC) and score the floor")
    add("train", "train one family (resumes from its last checkpoint)", family=True)
    add("evaluate", "test metrics, sampling speed, sample grid and interpolation", family=True)
    add("export", "export ONNX graphs and check ONNX Runtime parity", family=True)
    add("register", "register in MLflow and promote to @champion if better", family=True)
    add("compare", "write reports/comparison (table + charts + side-by-side samples) from the metrics files")
    sp = add("sample", "generate images from a registered model", family=True)
    sp.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    sp.add_argument("--out", type=Path, default=Path("samples.png"), help=".png grid or .npz (key images, uint8)")
    sp.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    sp.add_argument("--model-uri", default=None, help="default models:/genops-FAMILY@champion")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--label", type=int, default=None, help="class to generate (conditional models)")
    sp.add_argument("--steps", type=int, default=None, help="sampling steps (diffusion: DDIM/DDPM chain length)")
    sp.add_argument("--method", default=None, help="sampler (diffusion: ddim | ddpm)")
    sp.add_argument("--eta", type=float, default=None, help="DDIM stochasticity (0 = deterministic, 1 = DDPM-like)")
    sp.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance weight w (0 unconditional, 1 conditional, >1 guided)")
    sp = add("pipeline", "run the whole pipeline as a Prefect flow over the DVC stages")
    sp.add_argument("--families", default=None, help="comma-separated subset of params.yaml `families`")
    sp.add_argument("--smoke", action="store_true",
                    help="tiny sizes in a scratch workspace (.genops/smoke): checks data and setup in minutes")
    sub.add_parser("families", help="list the model families and what each samples by")
    return p


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> object:
    if args.command == "families":
        from genops.models.registry import FAMILIES, family_class

        return {name: {"summary": family_class(name).info.summary, "samples_by": family_class(name).info.samples_by,
                       "primary_metric": family_class(name).primary_metric.name} for name in FAMILIES}

    from genops.config import load_params, project_root

    root = project_root()
    if args.command == "pipeline":
        from genops.orchestration import run_pipeline

        families = args.families.split(",") if args.families else None
        return run_pipeline(root, families=families, smoke=args.smoke, overrides=args.overrides)

    params = load_params(root, args.overrides)
    if args.command == "prepare":
        from genops.paths import ProjectPaths
        from genops.stages.prepare import prepare

        r = prepare(params, root, ProjectPaths(root).prepared)
        return {"spec": r.spec.to_dict(), "n_train": r.n_train, "n_test": r.n_test, "n_dropped": r.n_dropped,
                "data_hash": r.data_hash}
    if args.command == "validate":
        from genops.paths import ProjectPaths
        from genops.stages.validate import validate

        paths = ProjectPaths(root)
        report = validate(params.get("validation", {}), paths.prepared, paths.validation)
        return {"success": report.success, "n_rows": report.n_rows, "result": str(report.result_path)}
    if args.command == "evaluator":
        from genops.stages.evaluator import evaluator_stage

        return evaluator_stage(params, root)
    if args.command == "compare":
        from genops.stages.compare import compare_stage

        return compare_stage(params, root, log_mlflow=True)
    if args.command == "sample":
        from genops.stages.sample import sample_stage

        options = {k: getattr(args, k) for k in ("steps", "method", "eta", "guidance") if getattr(args, k) is not None}
        return sample_stage(args.family, args.n, args.out, root, args.backend, args.model_uri, args.seed, args.label,
                            options)
    if args.command in FAMILY_COMMANDS:
        from genops.stages import run_family_stage

        result = run_family_stage(args.command, args.family, params, root)
        return result if isinstance(result, dict) else vars(result)
    raise AssertionError(args.command)


def run_in_process(argv: list[str]) -> object:
    """Run one `genops ...` command in this process (the flow uses it to skip ~8 s of imports per stage).

    Errors propagate as exceptions instead of exit codes, so the caller sees the message.
    """
    args = _parser().parse_args(argv)
    if args.command == "pipeline":
        raise ValueError("`genops pipeline` cannot run as a stage of itself")
    return _run(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.quiet)
    from genops.errors import GenopsError, ValidationFailed

    try:
        result = _run(args)
    except ValidationFailed as exc:
        print(f"genops {args.command}: dataset rejected by validation\n{exc}", file=sys.stderr)
        return 1
    except GenopsError as exc:
        print(f"genops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genops {args.command}: interrupted (training resumes from its last checkpoint)", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
