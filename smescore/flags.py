"""Command-line flags that cannot mislead, for `smescore <command>`, the `python -m` job mains and
Beam's PipelineOptions alike.

The job options are declared once, in beam_jobs/options.py (SmescoreOptions); the CLI and the
mains read those declarations (`declared(...)`), and every command line goes through `split()`
before argparse or Beam sees it. `split()` accepts `--a-b` and `--a_b`, `--flag value` and
`--flag=value`, and refuses what Beam or argparse would otherwise let through quietly: a flag given
twice (the last one silently winning), an unknown flag (Beam drops it with a log line), a
misspelt Beam flag, an abbreviation. Beam's own flags are checked against the flags its
PipelineOptions classes declare and handed on as `--name=value`.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
from typing import Iterable, Sequence

from smescore.errors import UsageError

# Flags that are true alone (`--require_gpu`) and also take `=true|false` (flex templates pass
# every parameter as --name=value). Beam's --dry_run takes any string and treats "False" as true:
# here it is a switch too, and --dry_run=false leaves it off.
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")

BEAM_FLAGS = ("Beam's own flags (--runner, --project, --region, --temp_location, "
              "--direct_num_workers, ...) pass through to Beam. Every flag is accepted as --a-b or "
              "--a_b, as --flag value or --flag=value, and once only.")
ENVIRONMENT = """environment:
  SMESCORE_WAREHOUSE  default --warehouse of `report` and `query` (else out/demo/warehouse.duckdb)
  SMESCORE_REGISTRY   default --registry of `report`, `backtest`, `promote`, `rollback`,
                      `challenger` (`report` else out/demo/registry)
  SMESCORE_GATES_CONFIG  default --gates-config of `score` (else the packaged gates.json)"""


def canonical(name: str) -> str:
    """`--as-of`, `--as_of`, `as-of` -> `as_of`."""
    return name.lstrip("-").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What split() needs to know of a flag."""
    shown: str            # how messages name it: --as-of in the CLI, --as_of for Beam
    option: str           # how it is handed on: the parser's own spelling (--as_of)
    dest: str             # aliases (--experiment, --experiments) share it
    takes_value: bool     # False: a store_true flag
    optional_value: bool  # a switch: alone means true, or =true|false
    repeatable: bool      # accumulates (Beam's --experiments, --labels): may be given again


def specs_of(parser: argparse.ArgumentParser, dashes: bool) -> dict[str, Spec]:
    """Every long flag of an argparse parser, keyed by canonical name."""
    out = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        # a plain store or store_true/false keeps the last value; anything else accumulates
        repeatable = not isinstance(action, (argparse._StoreAction, argparse._StoreConstAction))
        for s in longs:
            name = canonical(s)
            if name in out and "_" not in s:
                continue                  # both spellings declared: hand on the underscored one
            shown = "--" + (name.replace("_", "-") if dashes else name)
            out[name] = Spec(shown, s, action.dest, action.nargs != 0, action.nargs == "?",
                             repeatable)
    return out


@functools.lru_cache(maxsize=1)
def beam_specs() -> dict[str, Spec]:
    """The flags Beam's own PipelineOptions classes declare (--runner, --project, ...), as Beam
    builds its parser: every direct subclass of PipelineOptions except smescore's."""
    # Beam only once a command line is checked, so `smescore --help` stays instant
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        if cls.__module__.startswith("apache_beam."):
            seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    specs = specs_of(parser, dashes=False)
    specs["dry_run"] = dataclasses.replace(specs["dry_run"], optional_value=True)  # see TRUE
    return specs


def _nearest(name: str, own: dict[str, Spec], beam: dict[str, Spec] | None) -> str:
    """The closest known flag: one of the command's own within a ratio of 0.6, a Beam flag only
    within 0.8 (Beam has ~150 flags: a loose match there suggests nonsense, e.g. --flink_version
    for --model-version)."""
    best, best_ratio = None, 0.0
    for known, cutoff in ((own, 0.6), (beam or {}, 0.8)):
        for candidate in known:
            ratio = difflib.SequenceMatcher(None, name, candidate).ratio()
            if ratio >= cutoff and ratio > best_ratio:
                best, best_ratio = known[candidate], ratio
    return f" (did you mean {best.shown}?)" if best else ""


def _switch_value(flag: str, value: str | None) -> bool:
    if value is None:
        return True
    v = value.strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise UsageError(f"{flag} takes true or false, got {value!r}")


def split(argv: Sequence[str], own: dict[str, Spec], beam: dict[str, Spec] | None = None,
          where: str = "") -> tuple[list[str], list[str]]:
    """(own flags as `--name=value` plus the positionals in order, Beam flags as `--name=value`).

    Raises UsageError for an unknown flag (naming the nearest known one), a flag given twice, a
    flag missing its value, a switch given something other than true/false, and for `--dry_run`
    without `--runner=DataflowRunner` (only Dataflow honours it: any other runner would run and
    publish). `beam=None`: the command takes no Beam flags.
    """
    prefix = f"{where}: " if where else ""
    own_out, beam_out, seen = [], [], {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            raise UsageError(f"{prefix}a bare '--' is not accepted")
        if token in ("-h", "--help"):
            own_out.append(token)
            continue
        if not token.startswith("--"):
            if token.startswith("-") and not _is_number(token):
                raise UsageError(f"{prefix}{token}: single-dash flags are not accepted "
                                 f"(use --name)")
            own_out.append(token)
            continue
        text, eq, value = token.partition("=")
        name = canonical(text)
        spec, mine = own.get(name), True
        if spec is None and beam is not None:
            spec, mine = beam.get(name), False
        if spec is None:
            raise UsageError(f"{prefix}unknown flag {text}{_nearest(name, own, beam)}")
        if not eq:
            value = None
            if spec.takes_value and not spec.optional_value:
                if i >= len(tokens) or tokens[i].startswith("--"):
                    raise UsageError(f"{prefix}{spec.shown} needs a value")
                value, i = tokens[i], i + 1
            elif spec.optional_value and i < len(tokens) and tokens[i].lower() in TRUE + FALSE:
                value, i = tokens[i], i + 1
        elif not spec.takes_value:
            raise UsageError(f"{prefix}{spec.shown} takes no value, got {token!r}")
        key = (mine, spec.dest)
        if key in seen and not spec.repeatable:
            raise UsageError(f"{prefix}{spec.shown} given twice ({seen[key]} and {token}"
                             f"{'' if eq or value is None else ' ' + value}): give it once")
        seen.setdefault(key, token if eq or value is None else f"{token} {value}")
        out = own_out if mine else beam_out
        real = spec.option
        if spec.optional_value:
            if _switch_value(prefix + spec.shown, value):
                out.append(f"{real}=true" if mine else f"{real}=True")
        elif spec.takes_value:
            out.append(f"{real}={value}")
        else:
            out.append(real)
    if (False, "dry_run") in seen:
        runner = next((t.partition("=")[2] for t in beam_out if t.startswith("--runner=")), "")
        if runner not in ("DataflowRunner", "dataflow") and any(
                t.startswith("--dry_run=") for t in beam_out):
            raise UsageError(f"{prefix}--dry_run only works with --runner=DataflowRunner (it builds "
                             f"the Dataflow job without submitting it); with "
                             f"{'--runner=' + runner if runner else 'the local DirectRunner'} the "
                             f"job would run and publish")
    return own_out, beam_out


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def declared(options_cls, names: Iterable[str] | None = None,
             exclude: Iterable[str] = ()) -> list[argparse.Action]:
    """The argparse actions a PipelineOptions subclass declares (all, or those `names`, in
    declaration order), read from its own `_add_argparse_args`."""
    recorder = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    options_cls._add_argparse_args(recorder)
    actions = {canonical(a.option_strings[0]): a for a in recorder._actions}
    if names is None:
        return [a for n, a in actions.items() if n not in set(exclude)]
    unknown = [n for n in names if n not in actions]
    if unknown:
        raise KeyError(f"{options_cls.__name__} declares no flag(s) {unknown}")
    return [actions[n] for n in names]


def add_declared(parser: argparse.ArgumentParser, action: argparse.Action,
                 required: bool = False) -> None:
    """Re-declare a recorded action on a CLI parser under both spellings."""
    name = canonical(action.option_strings[0])
    kwargs = dict(dest=name, default=action.default, help=action.help, required=required)
    if action.nargs == 0:
        kwargs["action"] = "store_true"
    else:
        kwargs.update(type=action.type, choices=action.choices, nargs=action.nargs,
                      metavar=action.metavar or name.upper())
        if action.nargs == "?":
            kwargs["const"] = action.const
    add(parser, name, **kwargs)


def add(parser: argparse.ArgumentParser, name: str, **kwargs) -> argparse.Action:
    """`--a-b` and `--a_b` for one option (help shows the dashed name first)."""
    name = canonical(name)
    spellings = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    kwargs.setdefault("dest", name)
    return parser.add_argument(*spellings, **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse that shows every default and raises UsageError (one line) instead of printing
    the usage and exiting."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        where = self.prog.removeprefix("smescore").strip()
        raise UsageError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows the default of every flag that has one (ArgumentDefaultsHelpFormatter, minus the
    empty and False defaults that say nothing), and keeps the description's line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and action.default not in (None, "", False)
                and action.default is not argparse.SUPPRESS and action.option_strings):
            text += " (default: %(default)s)"
        return text
