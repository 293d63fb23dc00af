"""The process around every entry point: TensorFlow's environment, quiet native logs, logging.

Set once here and called by the entry points (`smescore`, the `python -m` job mains, the worker
model handler) instead of each module setting TensorFlow's variables itself.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import traceback

from smescore.errors import EXIT_INTERNAL, EXIT_UNAVAILABLE, SmescoreError

# What TensorFlow's native code prints on a CPU machine while it looks for CUDA, before its own
# log level applies (absl writes everything to stderr until InitializeLog). None of it needs an
# operator's attention: a GPU job that finds no GPU fails on its own (--require_gpu).
NATIVE_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory", "computation placer already registered",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "TF-TRT Warning: Could not find TensorRT",
)

# Library log lines at WARNING that need nobody's attention here.
LOG_NOISE = (
    # Beam's RunInference, on every batch, when it cannot measure memory (any Linux container).
    "Resource module is not available for current platform",
)

LOG = logging.getLogger("smescore")


def tf_environment() -> None:
    """Before TensorFlow loads: legacy (tf_keras) SavedModels, deterministic CPU kernels (no
    oneDNN), no C++ info and warning logs. An operator's own settings win."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_filtered(noise=NATIVE_NOISE):
    """Route file descriptor 2 through a temp file for the block, then replay every line but
    the known noise (native code writes to the descriptor, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if not any(n in line for n in noise):
                    print(line, file=sys.stderr)


def load_tensorflow(debug: bool = False) -> None:
    """Import TensorFlow and let it look for a GPU once, quietly (`debug`: as it comes), so the
    CUDA probe's lines never reach the log; absl's Python warnings off below ERROR."""
    tf_environment()
    if "tensorflow" in sys.modules and not debug:
        return
    with (contextlib.nullcontext() if debug else native_stderr_filtered()):
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.DEBUG if debug else absl_logging.ERROR)


class _Handler(logging.StreamHandler):
    """INFO lines as plain text, warnings and errors with their level; on a terminal, progress
    records (extra={'live': True}) rewrite one status line instead of scrolling."""

    def __init__(self, stream=None):
        super().__init__(stream or sys.stderr)
        self._live = False

    def emit(self, record):
        try:
            text = self.format(record)
            tty = getattr(self.stream, "isatty", lambda: False)()
            if getattr(record, "live", False) and tty:
                self.stream.write("\r\033[K" + text)
                self._live = True
            else:
                if self._live:
                    self.stream.write("\n")
                    self._live = False
                self.stream.write(text + "\n")
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record):
        message = record.getMessage()
        if record.levelno == logging.INFO:
            return message
        text = f"{record.levelname.lower()}: {record.name}: {message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def logging_for_command(debug: bool = False):
    """For the duration of a command: smescore's progress at INFO, everything else (Beam, absl,
    ...) from WARNING, on stderr; with `debug`, everything from DEBUG. Put back afterwards (a
    command run in-process, as tests do, leaves the logging as it found it)."""
    root = logging.getLogger()
    saved = root.level, LOG.level
    handler = _Handler()
    handler.setFormatter(_Formatter())
    if not debug:
        handler.addFilter(lambda r: not any(n in str(r.msg) for n in LOG_NOISE))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)
    try:
        yield
    finally:
        handler.flush()
        root.removeHandler(handler)
        root.setLevel(saved[0])
        LOG.setLevel(saved[1])


def progress(message: str) -> None:
    """A job's progress line (what `progress=` callbacks receive from the entry points)."""
    LOG.info("%s", message)


def _unreachable(err: BaseException) -> bool:
    """A network or cloud service that did not answer (BigQuery, Cloud Storage, a Pushgateway
    behind a failed run): the transport's own error types, not a bug of ours."""
    kinds = [ConnectionError, TimeoutError]
    try:
        import requests
        kinds.append(requests.exceptions.ConnectionError)
        kinds.append(requests.exceptions.Timeout)
    except ImportError:
        pass
    try:
        from google.api_core import exceptions as gexc
        kinds += [gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.TooManyRequests,
                  gexc.BadGateway, gexc.GatewayTimeout, gexc.RetryError]
    except ImportError:
        pass
    return isinstance(err, tuple(kinds))


def report_error(err: BaseException, debug: bool = False) -> int:
    """`smescore: <message>` on stderr for an operator's error (its class's exit code), else
    `smescore: internal error: ...` (exit 1); the traceback only with --debug."""
    if debug:
        traceback.print_exception(err)
    text = " ".join(str(err).split())
    if isinstance(err, SmescoreError):
        print(f"smescore: {text}", file=sys.stderr)
        return err.exit_code
    if _unreachable(err):
        print(f"smescore: service unavailable: {type(err).__name__}: {text[:500]} (check the "
              f"address, the network and the credentials, then retry)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"smescore: internal error: {type(err).__name__}: {text[:500]} "
          f"(run with --debug for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL
