"""The errors an operator sees, each with its own exit code (documented in the README).

Raise one of these with a one-line message that names the file, feed, table or version and says
what to do; the entry points print `smescore: <message>` and exit with the class's code. Anything
else is an internal error (exit 1), with a traceback only under `--debug`.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1      # a bug or an unexpected failure: traceback with --debug
EXIT_USAGE = 2         # a flag refused (unknown, duplicate, conflicting, malformed): argparse's code
EXIT_BAD_INPUT = 3     # a feed, file, config, model card or registry entry that cannot be used
EXIT_GATE = 4          # a completeness / plausibility / drift gate refused to publish
EXIT_UNAVAILABLE = 5   # a service or location unreachable or busy: warehouse lock, BigQuery, GCS


class SmescoreError(Exception):
    """Base class: a failure the operator can act on; str(err) is the one-line message."""
    exit_code = EXIT_INTERNAL


class UsageError(SmescoreError):
    exit_code = EXIT_USAGE


class BadInput(SmescoreError):
    exit_code = EXIT_BAD_INPUT


class GateBreached(SmescoreError):
    exit_code = EXIT_GATE


class ServiceUnavailable(SmescoreError):
    exit_code = EXIT_UNAVAILABLE
