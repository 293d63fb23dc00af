"""From a calibrated PD to the published score and grade.

Score scaling is the standard points-to-double-the-odds (PDO) form. With p the calibrated 12-month
default probability and good:bad odds (1 - p) / p:

    factor = pdo / ln 2
    offset = base_score - factor * ln(base_good_odds)
    score  = offset - factor * ln(p / (1 - p))  =  offset + factor * ln(good odds)

so p = 1 / (1 + base_good_odds) scores exactly `base_score`, and each doubling of the good odds adds
`pdo` points. (A widely copied write-up gives `offset = base_score + factor * ln(odds)`: wrong sign.)

Attributions are in log-odds, so they convert linearly: `points_i = -factor * phi_i` and
`base_points + sum(points_i)` is the unclamped score.

The master scale maps a PD to one of ten grades ('1' best .. '10' worst) by PD upper bounds, plus
'D' for firms already in default at the as-of date.

Both live in `smescore/config/scorecard.json`; `load_scorecard_config` returns them frozen, with the
config's `version` and a fingerprint to record with every run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from importlib import resources
from typing import Any, Mapping

import numpy as np

from smescore.errors import BadInput

CONFIG_PACKAGE = "smescore.config"
SCORECARD_RESOURCE = "scorecard.json"


class ConfigError(BadInput, ValueError):
    """A configuration file or dict that cannot be used; the message says where and what was got."""


# ---------- small shared helpers (also used by models.rules) ----------
def check_keys(where: str, cfg: Mapping, required: set[str], optional: set[str] = frozenset()) -> None:
    """Unknown keys are errors: a typo ('pdO') must not fall back silently to a default."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(cfg).__name__} {cfg!r}")
    missing = sorted(required - set(cfg))
    unknown = sorted(set(cfg) - required - set(optional))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; "
                          f"allowed: {sorted(required | set(optional))}")


def finite_number(where: str, x: Any) -> float:
    """A finite real number (bools are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where} must be a number, got {type(x).__name__} {x!r}")
    if not math.isfinite(float(x)):
        raise ConfigError(f"{where} must be finite, got {x!r}")
    return float(x)


def config_fingerprint(cfg: Mapping) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace): reformatting a file keeps it."""
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _no_constants(name: str):
    raise ConfigError(f"JSON constant {name} is not allowed in a config")


def read_json_config(path: str | os.PathLike | None, resource: str) -> dict:
    """The JSON at `path`, or the packaged `smescore.config/<resource>` when path is None.
    NaN / Infinity literals are refused: they would slip through every range check."""
    if path is None:
        text = resources.files(CONFIG_PACKAGE).joinpath(resource).read_text(encoding="utf-8")
        where = f"{CONFIG_PACKAGE}/{resource}"
    else:
        where = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read the config ({e.strerror or e})") from None
    try:
        cfg = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a JSON object at the top level, got {type(cfg).__name__}")
    return cfg


def _check_open_unit(name: str, p: np.ndarray) -> None:
    bad = ~((p > 0.0) & (p < 1.0))          # NaN fails both comparisons
    if bad.any():
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {int(bad.sum())} bad "
                         f"value(s) of {p.size} (first: {p[bad][0]!r})")


def _check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name} must be finite; got {int(bad.sum())} bad value(s) of {x.size} "
                         f"(first: {x[bad][0]!r})")


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(a: np.ndarray):
    """A numpy scalar for scalar input, the array otherwise."""
    return a[()]


# ---------- score scaling ----------
@dataclasses.dataclass(frozen=True)
class ScoreScale:
    """PDO score scaling. `base_good_odds` is good:bad (30 means 30 goods per bad, PD 1/31)."""
    base_score: float = 600.0
    base_good_odds: float = 30.0
    pdo: float = 60.0
    min_score: int = 300
    max_score: int = 850

    def __post_init__(self):
        for name in ("base_score", "base_good_odds", "pdo", "min_score", "max_score"):
            finite_number(f"ScoreScale.{name}", getattr(self, name))
        if self.base_good_odds <= 0:
            raise ConfigError(f"ScoreScale.base_good_odds must be > 0, got {self.base_good_odds!r}")
        if self.pdo <= 0:
            raise ConfigError(f"ScoreScale.pdo must be > 0 (points to double the odds), got {self.pdo!r}")
        for name in ("min_score", "max_score"):
            v = getattr(self, name)
            if float(v) != int(v):
                raise ConfigError(f"ScoreScale.{name} must be a whole number (scores are published "
                                  f"as integers), got {v!r}")
        if not self.min_score < self.max_score:
            raise ConfigError(f"ScoreScale needs min_score < max_score, got {self.min_score!r} "
                              f">= {self.max_score!r}")
        if not self.min_score <= self.base_score <= self.max_score:
            raise ConfigError(f"ScoreScale.base_score {self.base_score!r} lies outside "
                              f"[{self.min_score}, {self.max_score}]")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "ScoreScale":
        fields = {f.name for f in dataclasses.fields(cls)}
        check_keys("score_scale", cfg, required=fields)
        return cls(**cfg)

    @property
    def factor(self) -> float:
        """Points per unit of log-odds: pdo / ln 2."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """The score at even odds (log-odds 0): base_score - factor * ln(base_good_odds)."""
        return self.base_score - self.factor * math.log(self.base_good_odds)

    # -- PD or log-odds to points --
    def unclamped_score_from_logit(self, logit) -> np.ndarray:
        """offset - factor * logit, logit = ln(pd / (1 - pd)) the calibrated log-odds of default."""
        z = _as_float(logit)
        _check_finite("logit", z)
        return _out(self.offset - self.factor * z)

    def unclamped_score(self, pd) -> np.ndarray:
        """offset - factor * ln(pd / (1 - pd)); ln(1 - pd) via log1p to keep tiny PDs exact."""
        p = _as_float(pd)
        _check_open_unit("pd", p)
        return _out(self.offset - self.factor * (np.log(p) - np.log1p(-p)))

    def clamp_round(self, unclamped) -> np.ndarray:
        """Published integer score: clamp to [min_score, max_score], then round half up.

        Half up (= half away from zero, the scores being positive), as a spreadsheet or a risk
        analyst would: 600.5 -> 601. numpy's np.round rounds half to even (600.5 -> 600)."""
        s = np.clip(_as_float(unclamped), self.min_score, self.max_score)
        return _out(np.floor(s + 0.5).astype(np.int64))

    def score(self, pd) -> np.ndarray:
        """Published integer score of a calibrated PD in (0, 1)."""
        return self.clamp_round(self.unclamped_score(pd))

    def score_from_logit(self, logit) -> np.ndarray:
        """Published integer score from the calibrated log-odds (the model's own output): no
        round trip through pd, so nothing is lost where pd is tiny or close to 1."""
        return self.clamp_round(self.unclamped_score_from_logit(logit))

    # -- attributions to points --
    def points_from_phi(self, phi) -> np.ndarray:
        """Score points of log-odds attributions: -factor * phi (risk up, points down)."""
        return _out(-self.factor * _as_float(phi))

    def base_points(self, expected_logit) -> np.ndarray:
        """Points before any feature speaks: offset - factor * E[logit] (the attribution baseline)."""
        return _out(self.offset - self.factor * _as_float(expected_logit))


# ---------- master scale ----------
@dataclasses.dataclass(frozen=True)
class MasterScale:
    """Grades by PD upper bound (inclusive): grade i holds bounds[i-1] < pd <= bounds[i].
    Grades are named '1'..'n' (the report SQL sorts them as integers); firms in default get
    `default_grade`."""
    pd_upper: tuple[float, ...]
    default_grade: str = "D"

    def __post_init__(self):
        b = self.pd_upper
        if len(b) < 2:
            raise ConfigError(f"master scale needs at least 2 grades, got {len(b)}")
        for i, x in enumerate(b):
            finite_number(f"master scale grade {i + 1} pd_upper", x)
        if any(not 0.0 < x <= 1.0 for x in b):
            raise ConfigError(f"master scale PD bounds must lie in (0, 1], got {list(b)}")
        if any(hi <= lo for lo, hi in zip(b, b[1:])):
            raise ConfigError(f"master scale PD bounds must be strictly increasing, got {list(b)}")
        if b[-1] != 1.0:
            raise ConfigError(f"master scale: the last grade's pd_upper must be 1.0 (every PD gets "
                              f"a grade), got {b[-1]!r}")
        if not isinstance(self.default_grade, str) or self.default_grade in self.grades:
            raise ConfigError(f"master scale default_grade must be a string distinct from "
                              f"{list(self.grades)}, got {self.default_grade!r}")

    @property
    def grades(self) -> tuple[str, ...]:
        return tuple(str(i + 1) for i in range(len(self.pd_upper)))

    @classmethod
    def from_config(cls, cfg: Mapping) -> "MasterScale":
        """{"default_grade": "D", "grades": [{"grade": "1", "pd_upper": 0.0025}, ...]}"""
        check_keys("master_scale", cfg, required={"grades"}, optional={"default_grade"})
        rows = cfg["grades"]
        if not isinstance(rows, list):
            raise ConfigError(f"master_scale.grades must be a list, got {type(rows).__name__}")
        bounds = []
        for i, row in enumerate(rows):
            check_keys(f"master_scale.grades[{i}]", row, required={"grade", "pd_upper"})
            if row["grade"] != str(i + 1):
                raise ConfigError(f"master_scale.grades[{i}]: grades must be named '1'..'n' in "
                                  f"order, best first; expected {str(i + 1)!r}, got {row['grade']!r}")
            bounds.append(finite_number(f"master_scale.grades[{i}].pd_upper", row["pd_upper"]))
        return cls(tuple(bounds), cfg.get("default_grade", "D"))

    def grade(self, pd, in_default=None) -> np.ndarray:
        """Grade per firm (object array of str). PD must lie in [0, 1] except for firms in default,
        whose PD is not looked at."""
        p = np.atleast_1d(_as_float(pd))
        dflt = (np.zeros(p.shape, bool) if in_default is None
                else np.broadcast_to(np.asarray(in_default, bool), p.shape))
        bad = ~dflt & ~((p >= 0.0) & (p <= 1.0))
        if bad.any():
            raise ValueError(f"pd must lie in [0, 1] to be graded; got {int(bad.sum())} bad "
                             f"value(s) of {p.size} (first: {p[bad][0]!r})")
        idx = np.searchsorted(np.asarray(self.pd_upper), np.where(dflt, 0.0, p), side="left")
        labels = np.asarray(self.grades, dtype=object)[idx]
        labels[dflt] = self.default_grade
        return labels


# ---------- the config file ----------
@dataclasses.dataclass(frozen=True)
class ScorecardConfig:
    version: str
    scale: ScoreScale
    master_scale: MasterScale
    fingerprint: str            # sha256 of the canonical JSON; recorded with each run

    @classmethod
    def from_dict(cls, cfg: Mapping) -> "ScorecardConfig":
        check_keys("scorecard config", cfg, required={"version", "score_scale", "master_scale"},
                   optional={"description"})
        if not isinstance(cfg["version"], str) or not cfg["version"]:
            raise ConfigError(f"scorecard config: version must be a non-empty string, "
                              f"got {cfg['version']!r}")
        return cls(cfg["version"], ScoreScale.from_config(cfg["score_scale"]),
                   MasterScale.from_config(cfg["master_scale"]), config_fingerprint(cfg))


def load_scorecard_config(path: str | os.PathLike | None = None) -> ScorecardConfig:
    """The scorecard config at `path`, or the packaged smescore/config/scorecard.json."""
    return ScorecardConfig.from_dict(read_json_config(path, SCORECARD_RESOURCE))
