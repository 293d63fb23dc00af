"""What every `python -m beam_jobs.<job>` main shares with `smescore <command>`: the job's flags
(declared once, in beam_jobs/options.py) checked before Beam sees them, `--help`, one-line errors.
"""
from __future__ import annotations

import json
import sys

from beam_jobs import options as job_options
from smescore import flags, runtime
from smescore.errors import UsageError



def parser(job: str, prog: str, description: str, required: bool = True) -> flags.Parser:
    """The job's flags on an argparse parser, both spellings each, with help and defaults."""
    p = flags.Parser(prog=prog, description=description, epilog=flags.BEAM_FLAGS)
    needed = job_options.REQUIRED[job] if required else ()
    for action in job_options.job_flags(job):
        flags.add_declared(p, action, required=flags.canonical(action.option_strings[0]) in needed)
    return p


def job_argv(argv, job: str) -> list[str]:
    """`argv` with the job's flags and Beam's checked and written `--name=value` (UsageError for
    an unknown, misspelt or repeated flag, or a stray argument)."""
    own = flags.specs_of(parser(job, job, "", required=False), dashes=False)
    mine, beam = flags.split(list(argv or []), own, flags.beam_specs(), where=job)
    stray = [t for t in mine if not t.startswith("--")]
    if stray:
        raise UsageError(f"{job}: unexpected argument(s) {' '.join(stray)} "
                               f"(flags are --name value)")
    return mine + beam


def main(job: str, run, argv=None, doc: str = "") -> int:
    """`python -m beam_jobs.<job>`: run it, print its result as JSON; errors as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    runtime.tf_environment()
    prog = f"python -m beam_jobs.{job}"
    if "-h" in argv or "--help" in argv:
        parser(job, prog, doc).print_help()
        return 0
    with runtime.logging_for_command(debug):
        try:
            if job == "score_portfolio":
                runtime.load_tensorflow(debug)
            result = run(argv)
            if result is not None:
                print(json.dumps(result, indent=2, default=str))
            return 0
        except Exception as err:  # noqa: BLE001 - one line for the operator; traceback on --debug
            return runtime.report_error(err, debug)
