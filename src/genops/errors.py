"""Errors that carry a message meant for a person, not a traceback."""


class GenopsError(Exception):
    """A failure the user can act on: the CLI prints the message and exits non-zero."""


class ValidationFailed(GenopsError):
    """The dataset broke an expectation; training must not start."""


class ExportParityError(GenopsError):
    """ONNX Runtime disagrees with torch beyond tolerance; the export is not trusted."""


class TrainingDiverged(GenopsError):
    """A loss became NaN/inf or exploded; the run is not registered."""


class TransientError(GenopsError):
    """A failure that can pass on its own (the tracking server unreachable, a network timeout): worth a retry."""


class StageFailed(GenopsError):
    """A pipeline stage failed; `transient` says whether the flow should retry it (deterministic failures, such as
    rejected data, a diverged run or a failed parity gate, fail the same way again and are not retried)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL: "temporary failure; the user is invited to retry"

_TRANSIENT_NAMES = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
                    "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ConnectError", "ReadError"}
_TRANSIENT_TEXT = ("Max retries exceeded", "Connection refused", "Connection reset", "Name or service not known",
                   "timed out", "Temporary failure in name resolution")


def is_transient(exc: BaseException | None) -> bool:
    """True if `exc`, or any exception it was raised from, is a network or server-availability failure.

    Matched by type (builtin ConnectionError/TimeoutError, our TransientError, and by name the connection errors of
    requests, urllib3 and httpx, which MLflow and Prefect raise) or, for MLflow's own wrapper exceptions, by the
    connection-failure text they carry: MLflow re-raises a refused connection as MlflowException."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ in _TRANSIENT_NAMES:
            return True
        if type(exc).__name__ == "MlflowException" and any(t in str(exc) for t in _TRANSIENT_TEXT):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)  # `from None` ends it
    return False
