"""Running one stage's command as `dvc repro` would: in a subprocess, or (one at a time) in this process."""

from __future__ import annotations

import collections
import json as _json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from genops.cli.commands import run_in_process
from genops.errors import EXIT_TRANSIENT, GenopsError, StageFailed, is_transient
from genops.orchestration.dvc_graph import StageInfo


def _in_process_argv(cmd: str) -> list[str] | None:
    """The argv of a plain `genops ...` command (no shell syntax), else None."""
    if any(ch in cmd for ch in "|&;<>$`\n"):
        return None
    argv = shlex.split(cmd)
    return argv[1:] if argv and argv[0] == "genops" else None


_IN_PROCESS_ENV = ("GENOPS_ROOT", "DVC_ROOT", "DVC_STAGE")
MAX_LINE_BYTES = 16384  # a longer "line" (no newline in sight) is cut: its rest is not buffered


class LineSplitter:
    """Raw output chunks -> the complete lines a terminal would end up showing.

    A progress bar redraws its line with carriage returns: only the last redraw before the newline is a line;
    everything before a carriage return is dropped as it arrives, so a bar that never ends its line holds at
    most one redraw in memory (and at most MAX_LINE_BYTES of one)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        *lines, rest = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._emit(line)
        self._pending = self._last_redraw(rest)[:MAX_LINE_BYTES]

    def close(self) -> None:
        """The output ended: an unterminated last line counts too."""
        if self._pending:
            self._emit(self._pending)
        self._pending = b""

    @staticmethod
    def _last_redraw(line: bytes) -> bytes:
        # "a\rb\r" (a bar that returned the cursor, then printed nothing) still shows "b".
        parts = [p for p in line.split(b"\r") if p.strip()]
        return parts[-1] if parts else b""

    def _emit(self, line: bytes) -> None:
        text = self._last_redraw(line)[:MAX_LINE_BYTES].decode(errors="replace").rstrip()
        if text.strip():
            self._on_line(text)


def run_stage_command(root: Path, stage: StageInfo, in_process: bool = False,
                      extra_env: dict[str, str] | None = None,
                      on_line: Callable[[str], None] | None = None) -> float:
    """Run a stage's command as `dvc repro` would; returns its wall time in seconds.

    `in_process` runs a plain `genops ...` command inside this process (same argument parsing and
    stage function, minus the interpreter start and the torch/mlflow imports). Only for stages run
    one at a time: the environment variables the stage reads are process-wide.
    `on_line` receives each complete output line of a subprocess stage (progress-bar redraws collapsed), e.g. to
    forward it to an orchestrator's log; an in-process stage logs through the `genops` loggers instead.
    """
    extra_env = dict(extra_env or {})
    argv = _in_process_argv(stage.cmd) if in_process else None
    if argv is not None:
        saved = {k: os.environ.get(k) for k in (*_IN_PROCESS_ENV, *extra_env)}
        os.environ.update({"GENOPS_ROOT": str(root), "DVC_ROOT": str(root), "DVC_STAGE": stage.name, **extra_env})
        sys.stderr.write(f"--- {stage.name}: {stage.cmd} (in process)\n")
        t0 = time.perf_counter()
        try:
            result = run_in_process(argv)
        except Exception as exc:
            if not isinstance(exc, GenopsError) and not is_transient(exc):
                raise  # a bug: its traceback, not a message
            raise StageFailed(f"stage {stage.name} (`{stage.cmd}`) failed:\n{exc}", is_transient(exc)) from exc
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if result is not None:
            sys.stderr.write(_json.dumps(result, indent=2, default=str)[:2000] + "\n")
        return time.perf_counter() - t0
    return _run_subprocess(root, stage, extra_env, on_line)


def _run_subprocess(root: Path, stage: StageInfo, extra_env: dict[str, str],
                    on_line: Callable[[str], None] | None = None) -> float:
    """Run the command in a shell, streaming its output (progress bars included) to our stderr and, line by
    line, to `on_line`."""
    env = {**os.environ, "GENOPS_ROOT": str(root), "DVC_ROOT": str(root), "DVC_STAGE": stage.name, **extra_env}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    tail: collections.deque[str] = collections.deque(maxlen=20)
    t0 = time.perf_counter()
    sys.stderr.write(f"--- {stage.name}: {stage.cmd}\n")
    proc = subprocess.Popen(stage.cmd, shell=True, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    pending = b""
    lines_out = LineSplitter(on_line) if on_line is not None else None
    # Raw chunks, not lines: tqdm redraws with carriage returns and would otherwise stall until done.
    sink = getattr(sys.stderr, "buffer", None)
    while chunk := proc.stdout.read1(65536):
        sink.write(chunk) if sink else sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()
        if lines_out is not None:
            lines_out.feed(chunk)
        *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        tail.extend(x.decode(errors="replace") for x in lines if x.strip())
    if pending.strip():
        tail.append(pending.decode(errors="replace"))
    if lines_out is not None:
        lines_out.close()
    code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        # EX_TEMPFAIL (our CLI's transient failures) and death by a signal (OOM killer, a lost node) may pass on a
        # retry; any other exit code is the command's own verdict and would repeat.
        transient = code == EXIT_TRANSIENT or code < 0 or code > 128
        raise StageFailed(f"stage {stage.name} (`{stage.cmd}`) failed with exit code {code}"
                          f"{' (transient: retried)' if transient else ''}:\n" + "\n".join(tail), transient)
    return wall
