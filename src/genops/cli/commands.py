"""The `genops` commands: argument parsing and dispatch to the stage functions.

Heavy libraries (torch, mlflow, prefect, great-expectations) are imported inside the commands that
need them, so `genops --help` answers in a fraction of a second. `genops pipeline` is dispatched by
genops.cli (it drives the others); the Prefect flow runs stage commands through `run_in_process`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

from genops.errors import GenopsError
from genops.models.sample_options import SAMPLE_OPTION_TYPES, SAMPLE_OPTIONS

FAMILY_COMMANDS = ("train", "evaluate", "export", "register")


def build_parser() -> argparse.ArgumentParser:
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
    sp = add("sweep", "train + evaluate a family once per value of a params.yaml `sweeps` entry -> reports/sweeps",
             family=True)
    sp.add_argument("param", help="the swept key of the family's section (e.g. beta)")
    sp = add("sample", "generate images from a registered model", family=True)
    sp.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    sp.add_argument("--out", type=Path, default=Path("samples.png"), help=".png grid or .npz (key images, uint8)")
    sp.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    sp.add_argument("--model-uri", default=None, help="default models:/genops-FAMILY@champion")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--label", type=int, default=None, help="class to generate (conditional models)")
    for option in SAMPLE_OPTIONS:  # declared once, with the models
        sp.add_argument(f"--{option.name}", type=option.type, default=None, help=option.help)
    sp.add_argument("--inpaint", type=Path, default=None, metavar="IMAGE",
                    help="complete this image instead of sampling: --n completions where --mask is black")
    sp.add_argument("--mask", type=Path, default=None, metavar="MASK",
                    help="with --inpaint: white (>= 128) = keep, black = generate (default: keep the top half)")
    sp.add_argument("--input", type=Path, default=None, metavar="DIR",
                    help="translate every image of this folder instead of sampling (families that translate: "
                         "cyclegan); unreadable files are skipped and named")
    sp.add_argument("--direction", choices=("a2b", "b2a"), default=None,
                    help="with --input: b2a (default) maps domain-B images into the training data's domain A")
    sp = sub.add_parser("restore", help="check out a registered version's recorded commit into a folder and pull "
                        "its outputs (checkpoint hash verified)")
    sp.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    sp.add_argument("--to", type=Path, required=True, help="folder to create")
    sp.add_argument("--repo", default=None, help="git repository to clone (default: this project)")
    sp = add("pipeline", "run the whole pipeline as a Prefect flow over the DVC stages")
    sp.add_argument("--families", default=None, help="comma-separated subset of params.yaml `families`")
    sp.add_argument("--smoke", action="store_true",
                    help="tiny sizes in a scratch workspace (.genops/smoke): checks data and setup in minutes")
    sp.add_argument("--profile", default=None, metavar="NAME",
                    help="apply the params.yaml `profiles:` entry NAME (e.g. gpu) before --set, writing it into "
                         "params.yaml as --set does")
    sp.add_argument("--shared-tracking", action="store_true",
                    help="with --smoke: log and register in MLFLOW_TRACKING_URI (the team server) as genops-smoke-* "
                         "instead of a scratch store")
    sp = add("params", "print the resolved configuration (schema defaults + params.yaml + --set) as YAML")
    sp.add_argument("--profile", default=None, metavar="NAME", help="with the `profiles:` entry NAME applied")
    sp.add_argument("--template", action="store_true",
                    help="print the defaults as a commented params.yaml instead (the file this project ships)")
    sp = sub.add_parser("stack", help="the team stack on this host: PostgreSQL, S3 (SeaweedFS), MLflow and Prefect "
                        "servers, a work pool and worker, all on 127.0.0.1",
                        description="Start, inspect or stop the team stack. State, logs and the 0600 env file "
                        "(source it to use the stack) live under --dir.")
    sp.add_argument("action", choices=("up", "down", "status", "connect"),
                    help="connect: make the stack's bucket this clone's default DVC remote (source the env file first)")
    sp.add_argument("--dir", type=Path, default=None, help="stack state folder (default .genops/stack)")
    sp.add_argument("--free-ports", action="store_true", help="pick free ports instead of 5000/4200/8333/55432")
    sp.add_argument("--no-worker", action="store_true", help="start no Prefect worker")
    sub.add_parser("families", help="list the model families and what each samples by")
    sub.add_parser("data-watch", help="emit the Prefect event genops.data.changed if the files behind data.source "
                   "changed since the last look (the retraining deployment's trigger listens for it)",
                   description="Fingerprint data.source; emit genops.data.changed to the Prefect server in "
                   "PREFECT_API_URL when it differs from the last fingerprint seen (.genops/data-watch.json). The "
                   "first look records a baseline. genops-data-watch/poll runs the same check on a schedule.")
    return p


def run_command(args: argparse.Namespace) -> object:
    """Run one parsed command other than `pipeline`; returns what it prints as JSON (or text)."""
    if args.command == "families":
        from genops.config import FAMILIES
        from genops.models.registry import family_class

        return {name: {"summary": family_class(name).info.summary, "samples_by": family_class(name).info.samples_by,
                       "primary_metric": family_class(name).primary_metric.name} for name in FAMILIES}
    if args.command in ("pipeline", "data-watch"):
        raise ValueError(f"`genops {args.command}` is a Prefect flow run by genops.cli, not a stage command")
    if args.command == "stack":
        return _stack(args)
    if args.command == "restore":
        from genops.config import project_root
        from genops.stages.restore import restore_stage

        return restore_stage(args.model_uri, args.to, project_root(), args.repo)

    from genops.config import load_params, project_root

    root = project_root()
    if args.command == "params":
        from genops.config.template import render_template, render_values

        if args.template:
            return render_template()
        return render_values(load_params(root, with_profile(root, args.profile, args.overrides)))
    params = load_params(root, args.overrides)
    if args.command == "prepare":
        from genops.stages.prepare import prepare_stage

        r = prepare_stage(params, root)
        return {"spec": r.spec.to_dict(), "n_train": r.n_train, "n_test": r.n_test, "n_dropped": r.n_dropped,
                "data_hash": r.data_hash}
    if args.command == "validate":
        from genops.stages.validate import validate_stage

        return validate_stage(params, root)
    if args.command == "evaluator":
        from genops.stages.evaluator import evaluator_stage

        return evaluator_stage(params, root)
    if args.command == "compare":
        from genops.stages.compare import compare_stage

        return compare_stage(params, root, log_mlflow=True)
    if args.command == "sample":
        from genops.stages.sample import sample_stage

        options = {k: getattr(args, k) for k in SAMPLE_OPTION_TYPES
                   if getattr(args, k) is not None}
        return sample_stage(args.family, args.n, args.out, root, args.backend, args.model_uri, args.seed, args.label,
                            options, model_prefix=params.tracking.model_prefix, inpaint=args.inpaint,
                            mask=args.mask, input_dir=args.input, direction=args.direction)
    if args.command == "sweep":
        from genops.stages.sweep import run_sweep

        return run_sweep(root, args.family, args.param, params)
    if args.command in FAMILY_COMMANDS:
        from genops.stages import run_family_stage

        return run_family_stage(args.command, args.family, params, root)
    raise AssertionError(args.command)


def with_profile(root: Path, profile: str | None, overrides: list[str]) -> list[str]:
    """The `--profile` entry's overrides followed by the user's `--set` ones (which win)."""
    if not profile:
        return list(overrides)
    from genops.config import load_params
    from genops.config.loading import profile_overrides

    return [*profile_overrides(load_params(root), profile), *overrides]


def _stack(args: argparse.Namespace) -> object:
    from genops.stack import manager
    from genops.stack.layout import Ports

    try:
        from genops.config import project_root

        project: Path | None = project_root()
    except Exception:  # noqa: BLE001 - the stack does not need a project
        project = None
    folder = (args.dir or (project or Path.cwd()) / ".genops" / "stack").resolve()
    if args.action == "up":
        dvc_project = project if project is not None and (project / ".dvc").is_dir() else None
        return manager.up(folder, Ports.free() if args.free_ports else None, worker=not args.no_worker,
                          project=dvc_project)
    if args.action == "down":
        return manager.down(folder)
    if args.action == "status":
        return manager.stack_status(folder)
    if project is None:
        raise GenopsError("`genops stack connect` runs inside a genops project (no params.yaml found)")
    manager.connect_dvc(project, dict(os.environ))
    return {"dvc_remote": manager.DVC_REMOTE, "project": str(project)}


def as_output(result: object) -> object:
    """Stage results (dataclasses or dicts) as JSON-able values."""
    return asdict(result) if is_dataclass(result) and not isinstance(result, type) else result


def run_in_process(argv: list[str]) -> object:
    """Run one `genops ...` stage command in this process (the flow uses it to skip ~8 s of imports per stage).

    Errors propagate as exceptions instead of exit codes, so the caller sees the message.
    """
    args = build_parser().parse_args(argv)
    if args.command == "pipeline":
        raise ValueError("`genops pipeline` cannot run as a stage of itself")
    return as_output(run_command(args))
