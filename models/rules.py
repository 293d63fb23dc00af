"""The cold-start rules engine: a transparent points scorecard over registry data only.

Firms with too little feed history for the model (decided upstream) are scored by a handful of
rules on what the business registry says: registered capital, industry section, province, legal
form, firm age, the legal representative's age, administrative penalties and lawsuits.

Every rule puts each firm in exactly one bin (a numeric range, a category list, the rule's `other`
bin for categories no list names, or its `missing` bin) and each bin carries a log-odds adjustment:

    logit = base_logit + sum(adjustment_r)          pd = 1 / (1 + exp(-logit))
    points_r = -factor * adjustment_r               (factor from the ScoreScale)
    base_points + sum(points_r) = offset - factor * logit = the unclamped score

exactly as the model path, so scores, grades and reasons read the same whichever path scored the
firm. Adverse bins (adjustment > 0) carry a stable reason code ('C01'...) and, optionally, zh/en
sentence templates: `{value}` is the firm's value rendered by the catalogue
(transforms.catalog.render_value, categories in Chinese / English), `{raw}` the raw value for a
format spec such as `{raw:.0f}`. Each sentence ends with the typical value (the champion's
training median or most frequent category: cold-start firms are set beside the book the model
learnt from). Without templates the catalogue's own reason sentence is used, which says both.

The rules live in `smescore/config/cold_start_rules.json`; `load_rules_config` returns them frozen
with the config's `version` and a fingerprint to record with each run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Mapping, Union

import numpy as np

from models.reasons import (MAX_REASONS, MIN_POINTS, TypicalFirm, plain_value, rank_reasons, reason,
                            sentences)
from models.scorecard import (ConfigError, ScoreScale, check_keys, config_fingerprint, finite_number,
                              read_json_config)
from transforms import catalog, feeds

RULES_RESOURCE = "cold_start_rules.json"
REGISTRY_FEEDS = ("enterprises", "registry_events")     # the only data a cold-start firm has
# Closed vocabularies from the feed contract: a misspelt category would silently never match.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "ent_industry": feeds.INDUSTRY_SECTIONS,
    "ent_province": feeds.PROVINCES,
    "ent_legal_form": feeds.LEGAL_FORMS,
}
# One registry fact moving the odds by e^3 (x20) is a typo (0.4 written as 4), not a rule.
MAX_ABS_ADJUSTMENT = 3.0
CODE_PATTERN = re.compile(r"C\d{2,}")
_OUTCOME_KEYS = {"adjustment", "code", "text_zh", "text_en"}


# ---------- what a value gets ----------
@dataclasses.dataclass(frozen=True)
class Outcome:
    """A bin's log-odds adjustment (+ = riskier) and, when it adds risk, its reason."""
    adjustment: float
    code: str | None = None
    text_zh: str | None = None     # template with {value} / {raw}; None: the catalogue's sentence
    text_en: str | None = None

    @property
    def adverse(self) -> bool:
        return self.adjustment > 0.0

    def texts(self, feature: catalog.Feature, value, typical) -> tuple[str, str]:
        """(zh, en) sentences for a firm's value (None when missing) beside the typical one."""
        if self.text_zh is None:
            return sentences(feature, value, typical)
        return (self.text_zh.format(value=catalog.render_value(feature, value, "zh"), raw=value)
                + catalog.typical_clause(feature, typical, "zh", value),
                self.text_en.format(value=catalog.render_value(feature, value, "en"), raw=value)
                + catalog.typical_clause(feature, typical, "en", value))


def _outcome(where: str, cfg: Mapping, extra_keys: set[str] = frozenset()) -> Outcome:
    check_keys(where, cfg, required={"adjustment"}, optional=(_OUTCOME_KEYS - {"adjustment"}) | extra_keys)
    adj = finite_number(f"{where}.adjustment", cfg["adjustment"])
    if abs(adj) > MAX_ABS_ADJUSTMENT:
        raise ConfigError(f"{where}.adjustment must be within +-{MAX_ABS_ADJUSTMENT} log-odds, got {adj!r}")
    code = cfg.get("code")
    if adj > 0 and code is None:
        raise ConfigError(f"{where}: an adverse bin (adjustment {adj} > 0) needs a reason code")
    if code is not None and (not isinstance(code, str) or not CODE_PATTERN.fullmatch(code)):
        raise ConfigError(f"{where}.code must look like 'C01', got {code!r}")
    texts = [cfg.get("text_zh"), cfg.get("text_en")]
    if (texts[0] is None) != (texts[1] is None):
        raise ConfigError(f"{where}: give both text_zh and text_en, or neither")
    if any(t is not None and not isinstance(t, str) for t in texts):
        raise ConfigError(f"{where}: text_zh / text_en must be strings, got {texts!r}")
    return Outcome(adj, code, *texts)


def _check_renders(where: str, outcome: Outcome, feature: catalog.Feature, sample) -> None:
    """Render the templates once at load time, so a bad placeholder fails the config, not a run."""
    try:
        outcome.texts(feature, sample, sample)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{where}: text template cannot be rendered with value {sample!r} "
                          f"({type(e).__name__}: {e}); use {{value}} or {{raw}}") from e


# ---------- rules ----------
@dataclasses.dataclass(frozen=True)
class NumericRule:
    """Half-open ranges [lower, upper) that tile the real line; NaN goes to `missing`."""
    feature: str
    edges: tuple[float, ...]        # interior cut points, strictly increasing
    bins: tuple[Outcome, ...]       # len(edges) + 1, lowest range first
    missing: Outcome

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """Indexed by `outcome_index`: the bins, then missing."""
        return self.bins + (self.missing,)

    def outcome_index(self, column) -> np.ndarray:
        v = np.asarray(column, dtype=np.float64)
        idx = np.searchsorted(np.asarray(self.edges, np.float64), v, side="right")
        return np.where(np.isnan(v), len(self.bins), idx)

    @classmethod
    def from_config(cls, where: str, feature: catalog.Feature, cfg: Mapping) -> "NumericRule":
        rows = _bin_rows(where, cfg)
        bins, lowers, uppers = [], [], []
        for b, row in enumerate(rows):
            w = f"{where}.bins[{b}]"
            bins.append(_outcome(w, row, extra_keys={"lower", "upper"}))
            lowers.append(_bound(f"{w}.lower", row.get("lower"), -math.inf))
            uppers.append(_bound(f"{w}.upper", row.get("upper"), math.inf))
            if not lowers[-1] < uppers[-1]:
                raise ConfigError(f"{w}: lower {lowers[-1]} must be below upper {uppers[-1]}")
        _check_tiling(where, lowers, uppers)
        rule = cls(feature.name, tuple(lowers[1:]), tuple(bins),
                   _outcome(f"{where}.missing", cfg["missing"]))
        for b, o in enumerate(rule.bins):
            sample = lowers[b] if math.isfinite(lowers[b]) else min(uppers[b] - 1.0, 0.0)
            _check_renders(f"{where}.bins[{b}]", o, feature, sample)
        _check_missing_text(where, rule.missing, feature)
        return rule


def _bound(where: str, x, unbounded: float) -> float:
    return unbounded if x is None else finite_number(where, x)


def _check_tiling(where: str, lowers: list[float], uppers: list[float]) -> None:
    """Ranges in ascending order, each starting where the previous ends, open at both ends."""
    if math.isfinite(lowers[0]):
        raise ConfigError(f"{where}: the first bin must have lower null (-inf); got {lowers[0]}, "
                          f"so lower values would fall in no bin")
    if math.isfinite(uppers[-1]):
        raise ConfigError(f"{where}: the last bin must have upper null (+inf); got {uppers[-1]}, "
                          f"so higher values would fall in no bin")
    for b in range(1, len(lowers)):
        prev, cur = uppers[b - 1], lowers[b]
        if cur < prev:
            raise ConfigError(f"{where}: bins[{b - 1}] and bins[{b}] overlap: [.., {prev}) and [{cur}, ..)")
        if cur > prev:
            raise ConfigError(f"{where}: gap between bins[{b - 1}] and bins[{b}]: values in "
                              f"[{prev}, {cur}) fall in no bin")


@dataclasses.dataclass(frozen=True)
class CategoricalRule:
    """Category lists; a category no list names goes to `other`, a missing one to `missing`."""
    feature: str
    groups: tuple[frozenset, ...]
    bins: tuple[Outcome, ...]       # one per group
    other: Outcome
    missing: Outcome

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """Indexed by `outcome_index`: the bins, then other, then missing."""
        return self.bins + (self.other, self.missing)

    def outcome_index(self, column) -> np.ndarray:
        feature = catalog.BY_NAME[self.feature]
        lookup = {c: b for b, group in enumerate(self.groups) for c in group}
        other, missing = len(self.bins), len(self.bins) + 1
        idx = [missing if (v := plain_value(feature, x)) is None else lookup.get(v, other)
               for x in np.asarray(column, dtype=object)]
        return np.asarray(idx, dtype=np.int64)

    @classmethod
    def from_config(cls, where: str, feature: catalog.Feature, cfg: Mapping) -> "CategoricalRule":
        rows = _bin_rows(where, cfg)
        vocab = VOCABULARIES.get(feature.name)
        seen: dict[str, int] = {}
        groups, bins = [], []
        for b, row in enumerate(rows):
            w = f"{where}.bins[{b}]"
            bins.append(_outcome(w, row, extra_keys={"categories"}))
            cats = row.get("categories")
            if not isinstance(cats, list) or not cats or not all(isinstance(c, str) and c for c in cats):
                raise ConfigError(f"{w}.categories must be a non-empty list of category names, got {cats!r}")
            for c in cats:
                if vocab is not None and c not in vocab:
                    raise ConfigError(f"{w}: unknown {feature.name} category {c!r}; known: {list(vocab)}")
                if c in seen:
                    raise ConfigError(f"{w}: category {c!r} is already in bins[{seen[c]}]")
                seen[c] = b
            groups.append(frozenset(cats))
            _check_renders(w, bins[-1], feature, cats[0])
        if "other" not in cfg:
            raise ConfigError(f"{where}: a categorical rule needs an 'other' bin for categories no "
                              f"list names")
        rule = cls(feature.name, tuple(groups), tuple(bins), _outcome(f"{where}.other", cfg["other"]),
                   _outcome(f"{where}.missing", cfg["missing"]))
        _check_renders(f"{where}.other", rule.other, feature, "OTHER")
        _check_missing_text(where, rule.missing, feature)
        return rule


Rule = Union[NumericRule, CategoricalRule]


def _bin_rows(where: str, cfg: Mapping) -> list:
    rows = cfg.get("bins")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}.bins must be a non-empty list, got {rows!r}")
    if "missing" not in cfg:
        raise ConfigError(f"{where}: every rule must say what a missing value gets ('missing' bin)")
    return rows


def _check_missing_text(where: str, missing: Outcome, feature: catalog.Feature) -> None:
    """An adverse missing bin needs its own sentence: the catalogue's would read
    '注册资本为无数据' ('Registered capital of no data')."""
    if missing.adverse and missing.text_zh is None:
        raise ConfigError(f"{where}.missing: an adverse missing bin needs text_zh and text_en")
    _check_renders(f"{where}.missing", missing, feature, None)


def _rule(i: int, cfg: Mapping) -> Rule:
    name = cfg.get("feature") if isinstance(cfg, Mapping) else None
    where = f"rules[{i}] ({name})"
    if name not in catalog.BY_NAME:
        raise ConfigError(f"{where}: unknown feature {name!r}: not in the catalogue")
    feature = catalog.BY_NAME[name]
    if feature.feed not in REGISTRY_FEEDS:
        raise ConfigError(f"{where}: cold-start rules use registry data only "
                          f"({', '.join(REGISTRY_FEEDS)}); {name} comes from {feature.feed}")
    optional = {"bins", "missing", "description"} | ({"other"} if feature.is_categorical else set())
    check_keys(where, cfg, required={"feature"}, optional=optional)
    kind = CategoricalRule if feature.is_categorical else NumericRule
    return kind.from_config(where, feature, cfg)


# ---------- the engine ----------
@dataclasses.dataclass(frozen=True)
class ColdStartRules:
    base_logit: float
    rules: tuple[Rule, ...]
    scale: ScoreScale = ScoreScale()
    max_reasons: int = MAX_REASONS
    min_points: float = MIN_POINTS

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(r.feature for r in self.rules)

    @property
    def base_pd(self) -> float:
        """PD of a firm whose every rule lands in a zero-adjustment bin."""
        return float(_sigmoid(np.float64(self.base_logit)))

    @classmethod
    def from_config(cls, cfg: Mapping, scale: ScoreScale | None = None) -> "ColdStartRules":
        """Validate a rules config dict. `scale` turns adjustments into points; pass the run's
        ScoreScale so rules and model points agree (default: the standard 600/30/60 scale)."""
        check_keys("cold-start rules", cfg, required={"version", "base_logit", "rules"},
                   optional={"description"})
        base = finite_number("cold-start rules base_logit", cfg["base_logit"])
        rows = cfg["rules"]
        if not isinstance(rows, list) or not rows:
            raise ConfigError(f"cold-start rules: 'rules' must be a non-empty list, got {rows!r}")
        rules = tuple(_rule(i, row) for i, row in enumerate(rows))
        _check_unique(rules)
        return cls(base, rules, scale if scale is not None else ScoreScale())

    def with_scale(self, scale: ScoreScale) -> "ColdStartRules":
        return dataclasses.replace(self, scale=scale)

    def outcome_indices(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n_firms, n_rules]: index into each rule's `outcomes`."""
        missing = [f for f in self.features if f not in values]
        if missing:
            raise ValueError(f"values has no column for rule feature(s) {missing}")
        lengths = {f: len(values[f]) for f in self.features}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"value columns differ in length: {lengths}")
        n = next(iter(lengths.values()))
        return np.column_stack([r.outcome_index(values[r.feature]) for r in self.rules]
                               ).reshape(n, len(self.rules))

    def adjustments(self, idx: np.ndarray) -> np.ndarray:
        """[n_firms, n_rules] log-odds adjustments for outcome indices."""
        return np.column_stack([np.asarray([o.adjustment for o in r.outcomes])[idx[:, j]]
                                for j, r in enumerate(self.rules)]).reshape(idx.shape)

    def score(self, values: Mapping[str, np.ndarray],
              typical: TypicalFirm) -> tuple[np.ndarray, np.ndarray, list[list[dict]]]:
        """(pd [n], logit [n], reasons per firm) from raw registry values (NaN / None / '' =
        missing). Reasons have the model's shape {code, feature, points, text_zh, text_en}: at
        most `max_reasons`, adverse bins only, most points taken first, ties by rule order; each
        sentence gives the `typical` firm's value too."""
        idx = self.outcome_indices(values)
        adj = self.adjustments(idx)
        logit = self.base_logit + adj.sum(axis=1)
        points = self.scale.points_from_phi(adj)
        return _sigmoid(logit), logit, self._reasons(values, idx, points, typical)

    def _reasons(self, values, idx, points, typical: TypicalFirm) -> list[list[dict]]:
        columns, keep = rank_reasons(points, self.max_reasons, self.min_points)
        out = []
        for i in range(idx.shape[0]):
            row = []
            for j in columns[i][keep[i]]:
                rule = self.rules[j]
                outcome = rule.outcomes[idx[i, j]]
                feature = catalog.BY_NAME[rule.feature]
                zh, en = outcome.texts(feature, plain_value(feature, values[rule.feature][i]),
                                       typical.value(rule.feature))
                row.append(reason(outcome.code, rule.feature, points[i, j], zh, en))
            out.append(row)
        return out


def _check_unique(rules: tuple[Rule, ...]) -> None:
    features = [r.feature for r in rules]
    dup = sorted({f for f in features if features.count(f) > 1})
    if dup:
        raise ConfigError(f"cold-start rules: one rule per feature; {dup} appear more than once")
    codes = [o.code for r in rules for o in r.outcomes if o.code is not None]
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise ConfigError(f"cold-start rules: reason codes must be unique; {dup} are used twice")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---------- the config file ----------
@dataclasses.dataclass(frozen=True)
class RulesConfig:
    version: str
    rules: ColdStartRules
    fingerprint: str            # sha256 of the canonical JSON; recorded with each run

    @classmethod
    def from_dict(cls, cfg: Mapping, scale: ScoreScale | None = None) -> "RulesConfig":
        rules = ColdStartRules.from_config(cfg, scale)
        if not isinstance(cfg["version"], str) or not cfg["version"]:
            raise ConfigError(f"cold-start rules: version must be a non-empty string, got {cfg['version']!r}")
        return cls(cfg["version"], rules, config_fingerprint(cfg))


def load_rules_config(path: str | os.PathLike | None = None,
                      scale: ScoreScale | None = None) -> RulesConfig:
    """The rules at `path`, or the packaged smescore/config/cold_start_rules.json."""
    return RulesConfig.from_dict(read_json_config(path, RULES_RESOURCE), scale)
