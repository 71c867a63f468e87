"""Errors that carry a message meant for a person, not a traceback."""


class GenopsError(Exception):
    """A failure the user can act on: the CLI prints the message and exits non-zero."""


class ValidationFailed(GenopsError):
    """The dataset broke an expectation; training must not start."""


class ExportParityError(GenopsError):
    """ONNX Runtime disagrees with torch beyond tolerance; the export is not trusted."""


class TrainingDiverged(GenopsError):
    """A loss became NaN/inf or exploded; the run is not registered."""
