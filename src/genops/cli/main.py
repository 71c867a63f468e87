"""`genops` command line: parse, run the command (genops.cli.commands) or the pipeline flow, print, exit code."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys

from genops.cli.commands import as_output, build_parser, run_command, with_profile
from genops.errors import EXIT_TRANSIENT, GenopsError, ValidationFailed, is_transient


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(args) -> object:
    if args.command == "data-watch":
        return _data_watch()
    if args.command == "pipeline":
        # Prefect reads its settings once, when it is first imported: set them before the flow module imports it.
        # The temporary API server's first start migrates a fresh database, which can take longer than Prefect's
        # 20 s default on a busy 2-core machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from genops.config import project_root
        from genops.orchestration.flow import run_pipeline

        if args.profile and args.smoke:
            raise GenopsError("--profile and --smoke are exclusive: a smoke run has its own tiny sizes")
        families = args.families.split(",") if args.families else None
        root = project_root()
        return run_pipeline(root, families=families, smoke=args.smoke,
                            overrides=with_profile(root, args.profile, args.overrides),
                            shared_tracking=args.shared_tracking)
    return as_output(run_command(args))


def _data_watch() -> object:
    """Run the data watcher flow against the Prefect server the retraining deployment's trigger lives on."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    from genops.config import project_root

    if not PREFECT_API_URL.value():
        # A temporary server would take the event and vanish with it, and the baseline would have moved on.
        raise GenopsError("genops data-watch emits to the Prefect server the retraining deployment is on: set "
                          "PREFECT_API_URL (e.g. source .genops/stack/stack.env)")
    from genops.orchestration.data_watch import genops_data_watch

    return genops_data_watch(str(project_root()))


# How a full disk surfaces: OSError ENOSPC from Python, safetensors' Rust IoError, SQLite's own wording.
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "os error 28", "database or disk is full")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return any(t in str(exc) for t in _DISK_FULL_TEXT)


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)

    try:
        result = _run(args)
    except ValidationFailed as exc:
        print(f"genops {args.command}: dataset rejected by validation\n{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"genops {args.command}: interrupted (training resumes from its last checkpoint)", file=sys.stderr)
        return 130
    except Exception as exc:
        # A network or server-availability failure exits EX_TEMPFAIL, so the flow (and any scheduler) knows a
        # retry can help; every other failure is deterministic and must not be retried.
        if is_transient(exc):
            print(f"genops {args.command}: temporary failure, a retry may pass: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_TRANSIENT
        if isinstance(exc, GenopsError):
            print(f"genops {args.command}: error: {exc}", file=sys.stderr)
            return 2
        full = next((e for e in _chain(exc) if _disk_full(e)), None)
        if full is not None:  # every writer goes through a temporary name first: what was there stays intact
            where = getattr(full, "filename", None) or "an output"
            print(f"genops {args.command}: error: disk full writing {where} ({type(full).__name__}: "
                  f"{str(full).splitlines()[0][:200]}): free space and rerun; outputs from earlier runs are intact",
                  file=sys.stderr)
            return 2
        raise
    if isinstance(result, str):
        print(result, end="" if result.endswith("\n") else "\n")
    elif result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
