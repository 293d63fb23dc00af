"""Model lifecycle: promote, rollback, challengers, the automatic rollback, and their audit log.

    <registry>/audit.jsonl    one JSON object per line, appended and fsync'd, never rewritten:
        at (UTC), action, from_version, to_version, who, why, metrics (the model cards' test AUC/KS
        of the versions involved and, given a warehouse, their latest backtest), and the champion
        and challengers after the change; a promote also records the version's validation verdict
        (and its failed checks) and, when given, the override.

A promote over a champion needs the version's `validation.json` (`smescore validate`) to have
passed, or an `override` that says why not; the first champion of an empty registry (what
`smescore train` makes of its first model) needs none.

Every change goes through `_change` under a lock on the registry: the audit entry is appended
(and on disk) before champion.json / challengers.json change, so the log never misses a change
that took effect. The previous champion is read from the log, never guessed from folder names or
dates: promotes stack up, a rollback steps one promote back (v1 -> v2 -> v3, rollback: v2,
rollback: v1, rollback: refused). A champion.json the log does not explain is an error.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from typing import Iterator, Optional

from models import registry as model_registry
from smescore.errors import GateBreached
from smescore.warehouse import reader

AUDIT_LOG = "audit.jsonl"
LOCK = ".lifecycle.lock"
CHAMPION_CHANGES = ("promote", "rollback", "automatic_rollback")
ACTIONS = CHAMPION_CHANGES + ("challenger_add", "challenger_remove")
DEFAULT_MAX_AUC_DROP = 0.05


class LifecycleError(ValueError):
    """A promote, rollback or challenger change that cannot be done; nothing was changed."""


class PromotionRefused(LifecycleError, GateBreached):
    """A promote of a version without a passed validation, and no override; nothing changed."""


def _registry(registry) -> model_registry.Registry:
    return registry if isinstance(registry, model_registry.Registry) else \
        model_registry.Registry(os.fspath(registry))


def default_who() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


# ----------------------------------------------------------------------------- the audit log

def audit_path(registry) -> str:
    return os.path.join(_registry(registry).root, AUDIT_LOG)


def read_audit(registry) -> list[dict]:
    """Every entry, oldest first ([] when the registry has no log yet)."""
    path = audit_path(registry)
    if not os.path.exists(path):
        return []
    entries = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise LifecycleError(f"{path}, line {n}: not a JSON object ({err})") from None
            if not isinstance(entry, dict) or entry.get("action") not in ACTIONS:
                raise LifecycleError(f"{path}, line {n}: not an audit entry: {line[:200]!r}")
            entries.append(entry)
    return entries


def _append(path: str, entry: dict) -> None:
    """One line, flushed and fsync'd before returning (and the folder, when the file is new)."""
    new = not os.path.exists(path)
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    if new:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(reg: model_registry.Registry) -> Iterator[None]:
    """One lifecycle change at a time per registry (train, CLI and the nightly job may race)."""
    os.makedirs(reg.root, exist_ok=True)
    with open(os.path.join(reg.root, LOCK), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- state

def current_champion(registry) -> Optional[str]:
    reg = _registry(registry)
    if not os.path.exists(os.path.join(reg.root, model_registry.CHAMPION)):
        return None
    return reg.champion()


def champion_history(registry) -> list[str]:
    """The champions in force, oldest first, replaying the audit log: a promote stacks its version
    on top, a rollback takes the top one off. Rolling back twice thus goes two promotions back,
    never 'back' to the version the last rollback left."""
    stack: list[str] = []
    for n, e in enumerate(read_audit(registry), start=1):
        if e["action"] not in CHAMPION_CHANGES:
            continue
        if not stack and e["from_version"] is not None:
            stack.append(e["from_version"])      # a champion from before the log was kept
        top = stack[-1] if stack else None
        if e["action"] == "promote":
            ok = e["from_version"] == top
            stack.append(e["to_version"])
        else:
            ok = len(stack) >= 2 and (e["from_version"], e["to_version"]) == (top, stack[-2])
            stack.pop()
        if not ok:
            raise LifecycleError(f"{audit_path(registry)}, entry {n} ({e['action']} "
                                 f"{e['from_version']} -> {e['to_version']}) does not follow from "
                                 f"the entries before it")
    return stack


def previous_champion(registry) -> Optional[str]:
    """The champion the current one was promoted over (what a rollback returns to), from the audit
    log; None when the current one is the first."""
    reg = _registry(registry)
    champion = reg.champion()
    history = champion_history(reg)
    if not history:
        raise LifecycleError(f"the audit log {audit_path(reg)} records no champion change, so it "
                             f"cannot tell which version {champion} replaced; not guessing")
    if history[-1] != champion:
        raise LifecycleError(f"champion.json names {champion} but the audit log leaves "
                             f"{history[-1]} champion: the champion was changed outside "
                             f"`smescore promote/rollback`; not guessing the previous one")
    return history[-2] if len(history) > 1 else None


_BACKTEST_SQL = (
    "SELECT as_of_date, auc, ks, gini, brier, n_firms, n_defaults, predicted_default_rate, "
    "observed_default_rate, calibration_status FROM performance WHERE model_version = ? "
    "AND segment_type = 'all'")


def latest_backtest(warehouse, version: str, as_of: Optional[dt.date] = None) -> Optional[dict]:
    """The version's backtest figures (segment 'all') of `as_of`, or of its latest backtested
    date; None when the risk tables hold none. `warehouse`: a DuckDB file or a reader of the risk
    tables (smescore.warehouse.reader)."""
    wh = reader(warehouse)
    if not wh.has_table("performance"):
        return None                                # no warehouse yet, or one from before backtests
    sql, params = _BACKTEST_SQL, [version]
    if as_of is not None:
        sql, params = sql + " AND as_of_date = ?", params + [as_of]
    rows = wh.query(sql + " ORDER BY as_of_date DESC LIMIT 1", params).to_pylist()
    if not rows:
        return None
    return {**rows[0], "as_of_date": str(rows[0]["as_of_date"])}


def version_metrics(registry, version: Optional[str], warehouse=None) -> dict:
    """What the audit log records of a version: its model card's test AUC/KS and, given a
    warehouse, its latest backtest."""
    if version is None:
        return {}
    test = _registry(registry).model_card(version)["metrics"]["test"]
    out = {"card_test_auc": test["auc"], "card_test_ks": test["ks"]}
    if warehouse is not None:
        out["backtest"] = latest_backtest(warehouse, version)
    return out


# ----------------------------------------------------------------------------- changes

def _change(reg, action: str, from_version, to_version, why: str, who: Optional[str],
            warehouse, champion: Optional[str], challengers: list[str], evidence=None,
            extra: Optional[dict] = None) -> dict:
    """Append the entry, then make the change it describes. The caller holds the lock."""
    metrics = {v: version_metrics(reg, v, warehouse) for v in (from_version, to_version) if v}
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
             .replace("+00:00", "Z"),
             "action": action, "from_version": from_version, "to_version": to_version,
             "who": who or default_who(), "why": why or "", "metrics": metrics,
             "champion": champion, "challengers": list(challengers)}
    if evidence:
        entry["metrics"]["evidence"] = evidence
    entry.update(extra or {})
    _append(audit_path(reg), entry)
    if champion is not None and champion != current_champion(reg):
        reg.set_champion(champion)
    if os.path.exists(os.path.join(reg.root, model_registry.CHALLENGERS)) or challengers:
        reg.set_challengers(list(challengers))
    return entry


def _champion_change(reg, action: str, to_version: str, why: str, who, warehouse,
                     expect_from: Optional[str] = None, evidence=None,
                     extra: Optional[dict] = None) -> dict:
    old = current_champion(reg)
    if expect_from is not None and old != expect_from:
        raise LifecycleError(f"the champion changed to {old} meanwhile; {action} not done")
    if old == to_version:
        raise LifecycleError(f"{to_version} is already the champion")
    challengers = [v for v in reg.challengers() if v != to_version]   # a champion is no challenger
    return _change(reg, action, old, to_version, why, who, warehouse, to_version, challengers,
                   evidence, extra)


def _known(reg, version: str) -> None:
    if version not in reg.versions():
        raise LifecycleError(f"unknown model version {version!r}; the registry {reg.root!r} "
                             f"holds {reg.versions()}")


def describe_check(check: dict) -> str:
    """One failed validation check in a line: name[scope] = value (threshold t)."""
    v = check.get("value")
    shown = "none" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    return f"{check.get('check')}[{check.get('scope')}] = {shown} (threshold {check.get('threshold')})"


def validation_verdict(registry, version: str) -> dict:
    """What promote records of a version's validation.json: passed / failed / missing, when, with
    which thresholds, and the failed checks."""
    reg = _registry(registry)
    path = os.path.join(reg.version_dir(version), model_registry.VALIDATION)
    if not os.path.exists(path):
        return {"status": "missing", "file": path, "failed_checks": []}
    try:
        result = model_registry.read_json(path)
    except (ValueError, model_registry.RegistryError) as err:   # not JSON: as good as failed
        return {"status": "failed", "file": path, "n_checks": 0,
                "failed_checks": [f"{model_registry.VALIDATION} unreadable: {err}"[:300]]}
    failed = [describe_check(c) for c in result.get("checks", []) if c.get("passed") is False]
    passed = result.get("passed") is True and not failed and bool(result.get("checks"))
    return {"status": "passed" if passed else "failed", "file": path,
            "validated_at": result.get("validated_at"),
            "config_fingerprint": result.get("config_fingerprint"),
            "n_checks": len(result.get("checks", [])), "failed_checks": failed}


def _promotion_gate(reg, version: str, override: Optional[str]) -> dict:
    """The audit fields of a promote over a champion; refuses an unvalidated or failed version
    unless overridden."""
    verdict = validation_verdict(reg, version)
    if verdict["status"] != "passed" and not (override or "").strip():
        if verdict["status"] == "missing":
            problem = (f"{version} has not been validated ({verdict['file']} is missing): run "
                       f"`smescore validate --version {version} --registry {reg.root} --feeds DIR`")
        else:
            failed = verdict["failed_checks"]
            problem = (f"{version} failed validation: {len(failed)} of {verdict['n_checks']} "
                       f"checks, e.g. {'; '.join(failed[:3]) or 'none recorded as passed'}")
        raise PromotionRefused(f"{problem}; not promoted (--override \"why\" promotes anyway, "
                               f"audited)")
    return {"validation": verdict, **({"override": override.strip()} if override else {})}


def promote(registry, version: str, why: str = "", who: Optional[str] = None,
            warehouse=None, override: Optional[str] = None) -> dict:
    """Make `version` the champion the next run scores with. Returns the audit entry. Over a
    champion, the version's validation must have passed, or `override` say why it goes anyway."""
    reg = _registry(registry)
    with _locked(reg):
        _known(reg, version)
        gate = _promotion_gate(reg, version, override) if current_champion(reg) is not None \
            else {}
        return _champion_change(reg, "promote", version, why, who, warehouse, extra=gate)


def rollback(registry, why: str = "", who: Optional[str] = None, warehouse=None,
             action: str = "rollback", expect_from: Optional[str] = None, evidence=None) -> dict:
    """Make the previous champion (from the audit log) the champion again."""
    reg = _registry(registry)
    with _locked(reg):
        champion = reg.champion()
        previous = previous_champion(reg)
        if previous is None:
            raise LifecycleError(f"no previous champion to roll back to: {champion} is the "
                                 f"earliest champion left in the audit log {audit_path(reg)}")
        _known(reg, previous)
        return _champion_change(reg, action, previous, why, who, warehouse, expect_from, evidence)


def add_challenger(registry, version: str, why: str = "", who: Optional[str] = None) -> dict:
    reg = _registry(registry)
    with _locked(reg):
        _known(reg, version)
        champion, challengers = current_champion(reg), reg.challengers()
        if version == champion:
            raise LifecycleError(f"{version} is the champion; it cannot also be a challenger")
        if version in challengers:
            raise LifecycleError(f"{version} is already a challenger: {challengers}")
        return _change(reg, "challenger_add", None, version, why, who, None, champion,
                       challengers + [version])


def remove_challenger(registry, version: str, why: str = "", who: Optional[str] = None) -> dict:
    reg = _registry(registry)
    with _locked(reg):
        challengers = reg.challengers()
        if version not in challengers:
            raise LifecycleError(f"{version!r} is not a challenger; the challengers are "
                                 f"{challengers}")
        return _change(reg, "challenger_remove", version, None, why, who, None,
                       current_champion(reg), [v for v in challengers if v != version])


# ----------------------------------------------------------------------------- automatic

def automatic_rollback(registry, warehouse, max_auc_drop: float = DEFAULT_MAX_AUC_DROP,
                       who: Optional[str] = None) -> Optional[str]:
    """Roll back when the champion's latest backtest AUC (segment 'all') is more than
    `max_auc_drop` below its model card's test AUC AND the previous champion's AUC on the same
    cohort (its backtest of the same date, same firms and defaults) is higher.

    Returns why it rolled back (for the run record), or None when it did not.
    """
    if not 0 <= max_auc_drop <= 1:
        raise ValueError(f"max_auc_drop must be in [0, 1], got {max_auc_drop}")
    reg = _registry(registry)
    if warehouse is None or current_champion(reg) is None:
        return None
    champion = reg.champion()
    seen = latest_backtest(warehouse, champion)
    if seen is None or seen["auc"] is None:
        return None
    claimed = reg.model_card(champion)["metrics"]["test"]["auc"]
    if claimed - seen["auc"] <= max_auc_drop:
        return None
    previous = previous_champion(reg) if champion_history(reg) else None   # None: no log yet
    if previous is None:
        return None
    other = latest_backtest(warehouse, previous, dt.date.fromisoformat(seen["as_of_date"]))
    if other is None or other["auc"] is None or other["auc"] <= seen["auc"] or \
            (other["n_firms"], other["n_defaults"]) != (seen["n_firms"], seen["n_defaults"]):
        return None
    reason = (f"automatic rollback from {champion} to {previous}: the backtest of "
              f"{seen['as_of_date']} ({seen['n_firms']} firms, {seen['n_defaults']} defaults) "
              f"gives {champion} an AUC of {seen['auc']:.4f}, {claimed - seen['auc']:.4f} below "
              f"its model card's {claimed:.4f} (more than max_auc_drop {max_auc_drop:g}), and "
              f"{previous} an AUC of {other['auc']:.4f} on the same cohort")
    rollback(reg, why=reason, who=who, warehouse=warehouse, action="automatic_rollback",
             expect_from=champion,
             evidence={"max_auc_drop": max_auc_drop, "champion_card_test_auc": claimed,
                       "champion_backtest": seen, "previous_backtest": other})
    return reason
