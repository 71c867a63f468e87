"""Stage output and `genops` log records in the Prefect run's logs (what the UI's Logs tab shows).

Two paths, because stages run two ways:

- a subprocess stage prints; genops.orchestration.runner hands each complete line to a `StageLineForwarder`,
  which sends it into the task run's logs (bounded: a chatty stage cannot flood the API; API only: the console
  already shows the raw output);
- an in-process stage logs through the `genops` loggers; `forward_genops_logs` attaches one Prefect API log
  handler to the `genops` logger for the flow's duration, so those records land in the task (or flow) run
  they were emitted in.

Why not PREFECT_LOGGING_EXTRA_LOGGERS=genops (checked on Prefect 3.8.8): Prefect reads it once, in
`setup_logging()` at `import prefect`, so it must already be in the environment of every process that runs the
flow (a worker's job, `python flows/retrain.py`, a test) and cannot be switched on by the flow itself; and it
only adds the handler: the `genops` logger keeps its level (NOTSET, i.e. the root's WARNING in a process that
did not configure logging), so INFO records never reach the handler (measured: only the WARNING record of a
flow arrived). When it is set, `forward_genops_logs` uses Prefect's handler already on the logger instead of
adding its own (no duplicates) and still lowers the level.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

GENOPS_LOGGER = "genops"
STAGE_OUTPUT_LOGGER = "genops.stage_output"  # the name a forwarded stage output line carries in the UI
MAX_LINE_CHARS = 2000  # a longer line is cut (Prefect drops a log over its size limit whole)
MAX_LINES_PER_STAGE = 5000  # after this many, lines are counted, not sent (the stage's stderr has them all)
RATE_PER_S = 20.0  # sustained lines per second sent; a burst of BURST passes at once
BURST = 200

# Our CLI's log format (genops.cli): "HH:MM:SS LEVEL logger: message"; its level becomes the record's level.
_LEVEL = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@", re.IGNORECASE)
_lock = threading.Lock()  # guards the handlers this module puts on loggers
_SECRET_NAMES = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are secrets (longest first, so none is half-masked)."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if _SECRET_NAMES.search(k) and len(v) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """Mask passwords in URLs (scheme://user:***@host) and the given secret values."""
    text = _USERINFO.sub(r"\1:***@", text)
    for value in secrets:
        text = text.replace(value, "***")
    return text


def stage_output_logger(run_logger: logging.Logger | logging.LoggerAdapter) -> logging.LoggerAdapter:
    """A logger for a stage's output lines that sends them to the Prefect API only, as records of the run that
    `run_logger` (get_run_logger()) belongs to.

    Not `run_logger` itself: that one also prints to the console, where the stage's raw output already went,
    so every line would appear twice in the terminal. The run ids travel in the record (as get_run_logger()
    puts them there), so the line lands in the task run whatever thread it is logged from."""
    base = logging.getLogger(STAGE_OUTPUT_LOGGER)
    with _lock:
        if not any(isinstance(h, APILogHandler) for h in base.handlers):
            base.addHandler(APILogHandler())
            base.propagate = False  # not the console, and not the `genops` handler (sent once)
            base.setLevel(logging.DEBUG)
    return logging.LoggerAdapter(base, dict(getattr(run_logger, "extra", None) or {}))


class StageLineForwarder:
    """A `runner.run_stage_command(on_line=...)` callback: each line into the Prefect run's logs, bounded.

    Lines are redacted, cut at MAX_LINE_CHARS, sent at most RATE_PER_S a second (bursts of BURST) and at most
    MAX_LINES_PER_STAGE in all; `close()` says through `run_logger` how many were held back. The full output
    still goes to the process's stderr (the worker's log) and the last lines of a failed stage are in its error."""

    def __init__(self, run_logger: logging.Logger | logging.LoggerAdapter, stage: str,
                 rate_per_s: float = RATE_PER_S, burst: int = BURST, max_lines: int = MAX_LINES_PER_STAGE,
                 output: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self._log, self._stage = run_logger, stage
        self._out = output if output is not None else stage_output_logger(run_logger)
        self._rate, self._burst, self._max = rate_per_s, burst, max_lines
        self._tokens, self._last = float(burst), time.monotonic()
        self._secrets = secret_values()
        self.sent = self.dropped = 0

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self.sent >= self._max or self._tokens < 1:
            self.dropped += 1
            return
        self._tokens -= 1
        self.sent += 1
        match = _LEVEL.match(line)
        level = logging.getLevelName(match.group(1)) if match else logging.INFO
        text = redact(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [...]", self._secrets)
        self._out.log(level, "%s", text)

    def close(self) -> None:
        if self.dropped:
            self._log.warning("%s: %d output lines not forwarded (more than %d in all or %.0f/s); the worker's "
                              "stderr has the full output", self._stage, self.dropped, self._max, self._rate)


class _RunLogHandler(APILogHandler):
    """Prefect's API handler, for records emitted inside a flow or task run only (it would warn on the others:
    a stage run from the command line, a background thread); secrets in messages are masked."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets = secret_values()

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def _logging_configured_by_the_app() -> bool:
    """True when the process set up its own root handlers (the `genops` CLI: -q means warnings only), as
    Prefect's setup_logging judges it; False under Prefect's own config (a worker's flow run) or pytest."""
    return any(getattr(h, "formatter", None) is not None and not isinstance(h, PrefectConsoleHandler)
               and not type(h).__name__.startswith("_") and type(h).__name__ != "LogCaptureHandler"
               for h in logging.getLogger().handlers)


_state: dict = {"depth": 0, "handler": None, "level": logging.NOTSET}  # shared by nested and concurrent users


@contextmanager
def forward_genops_logs(level: int = logging.INFO) -> Iterator[None]:
    """While open, `genops` log records at `level` and above also go to the Prefect run they are emitted in.

    Where the process did not configure logging, the `genops` logger is set to `level` meanwhile (else the
    root's WARNING filters INFO out before any handler); a level the application chose (`genops -q`) stays.
    Nested and concurrent uses (the flow, then each task in it) share one handler: no record is sent twice."""
    logger = logging.getLogger(GENOPS_LOGGER)
    with _lock:
        if _state["depth"] == 0:
            _state["level"] = logger.level
            # PREFECT_LOGGING_EXTRA_LOGGERS=genops already put Prefect's own API handler there: use it.
            if not any(isinstance(h, APILogHandler) for h in logger.handlers):
                _state["handler"] = _RunLogHandler()
                _state["handler"].setLevel(level)
                logger.addHandler(_state["handler"])
            # Raised only where nobody chose a level: the root's WARNING would drop every INFO record.
            if logger.getEffectiveLevel() > level and not _logging_configured_by_the_app():
                logger.setLevel(level)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                if _state["handler"] is not None:
                    logger.removeHandler(_state["handler"])
                    _state["handler"] = None
                logger.setLevel(_state["level"])
