"""The HTML validation report of a model version: one self-contained file, readable offline.

Renders what `models/validation.py` wrote into validation.json: the verdict and every check,
discrimination per walk-forward date with bootstrap intervals, calibration over time against the
observed default rate and the generator's true PD, calibration by grade (Jeffreys test), inputs
outside the training range, the monotonicity check, mean |points| per feature and the challengers.
Built like the run report (smescore/monitoring/run_report.py): plotly figures with fixed element ids,
plotly.js embedded once, nothing fetched.
"""
from __future__ import annotations

import os
import tempfile

import pandas as pd

from smescore.monitoring import run_report
from smescore.monitoring.run_report import BASELINE, STATUS_COLOURS, THIS_RUN, Section

_esc, _note, _table, _figure = run_report._esc, run_report._note, run_report._table, run_report._figure
TRUTH = "#2ca02c"
TOP_FEATURES = 20


def _v(x, fmt="{:.4f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _ci(figure) -> str:
    if not figure:
        return "n/a"
    if figure.get("ci_low") is None:
        return _v(figure["value"])
    return f"{figure['value']:.4f} [{figure['ci_low']:.4f}, {figure['ci_high']:.4f}]"


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def header(r: dict) -> str:
    checks = r["checks"]
    failed = sum(c["passed"] is False for c in checks)
    unmeasured = sum(c["passed"] is None for c in checks)
    verdict, colour = ("PASSED", STATUS_COLOURS["ok"]) if r["passed"] else \
        ("FAILED", STATUS_COLOURS["alert"])
    dates = [d["as_of_date"] for d in r["dates"]]
    kpis = [("verdict", verdict), ("checks failed", f"{failed} of {len(checks)}"),
            ("not measured", str(unmeasured)), ("walk-forward dates", str(len(dates))),
            ("with 12 observed months", str(len(r["pooled"]["dates"])))]
    return (f"<h1>smescore validation report — model <code>{_esc(r['version'])}</code></h1>"
            f'<p style="font-size:1.4em;color:{colour}"><b>{verdict}</b></p>'
            f"<p>Validated {_esc(r['validated_at'])} on the feeds <code>{_esc(r['feeds'])}</code> "
            f"(through {_esc(r['feeds_end'])}); book scored as of {_esc(dates[0])} … "
            f"{_esc(dates[-1])} with the nightly job's code; model-scored firms only (at least "
            f"{r['min_history_months']} months of history, not in default). Thresholds: "
            f"smescore validation config {_esc(r['config'].get('version') or '')} "
            f"(<code>{_esc(r['config_fingerprint'][:12])}</code>).</p>"
            + "".join(f'<span class="kpi"><b>{_esc(v)}</b>{_esc(k)}</span>' for k, v in kpis))


def checks_section(r: dict) -> Section:
    frame = pd.DataFrame(r["checks"])
    if "note" not in frame:
        frame["note"] = ""
    frame["verdict"] = frame["passed"].map({True: "pass", False: "FAIL"}).fillna("not measured")
    frame["value"] = [_shown(c["value"]) for c in r["checks"]]
    order = frame["verdict"].map({"FAIL": 0, "not measured": 1, "pass": 2})
    frame = frame.assign(_o=order).sort_values(["_o", "check", "scope"], kind="stable")
    summary = frame.groupby(["check", "verdict"]).size().unstack(fill_value=0)
    summary.columns.name = None
    columns = ["check", "scope", "value", "threshold", "verdict", "note"]
    open_ = frame[frame["verdict"] != "pass"]
    return Section("Checks", [
        "<p>Each check against the thresholds of smescore/config/validation.json.</p>",
        _table(summary.reset_index()),
        f"<p>Failed and not measured ({len(open_)}):</p>" + _table(open_[columns].fillna(""))
        if len(open_) else _note("Every check passed."),
        f"<details><summary>All {len(frame)} checks</summary>"
        + _table(frame[columns].fillna("")) + "</details>"])


def discrimination_section(r: dict) -> Section:
    import plotly.graph_objects as go
    rows = [d for d in r["dates"] if d.get("auc")]
    body = ["<p>Where the 12 months after a date are observed: AUC, KS and Gini with bootstrap "
            "95% percentile intervals (seeded; pooled over the dates, whole firms are resampled). "
            "Dates with role valid/test are the model card's own calibration and test dates "
            "(there on held-out firms, here on the whole book).</p>"]
    table = pd.DataFrame([{"as_of_date": d["as_of_date"], "role": d["role"],
                           "model-scored firms": d["model_scored"], "defaults": d["n_defaults"],
                           "AUC [95% CI]": _ci(d["auc"]), "KS [95% CI]": _ci(d["ks"]),
                           "Gini [95% CI]": _ci(d["gini"])} for d in rows])
    p = r["pooled"]
    if p.get("auc"):
        table = pd.concat([table, pd.DataFrame([{
            "as_of_date": "pooled", "role": f"{len(p['dates'])} dates",
            "model-scored firms": p["n"], "defaults": p["n_defaults"], "AUC [95% CI]": _ci(p["auc"]),
            "KS [95% CI]": _ci(p["ks"]), "Gini [95% CI]": _ci(p["gini"])}])], ignore_index=True)
    if not rows:
        return Section("Discrimination", body + [_note("No walk-forward date has 12 observed "
                                                       "months with both outcomes.")])
    fig = _figure(title="AUC and KS per date (bootstrap 95% intervals)", xaxis_title="as of",
                  yaxis_title="")
    x = [d["as_of_date"] for d in rows]
    for key, colour in (("auc", THIS_RUN), ("ks", BASELINE)):
        v = [d[key]["value"] for d in rows]
        fig.add_trace(go.Scatter(x=x, y=v, mode="markers+lines", name=key.upper(),
                                 marker_color=colour, error_y=dict(
                                     type="data", symmetric=False,
                                     array=[(d[key]["ci_high"] or d[key]["value"]) - d[key]["value"]
                                            for d in rows],
                                     arrayminus=[d[key]["value"] - (d[key]["ci_low"] or d[key]["value"])
                                                 for d in rows])))
    return Section("Discrimination", body + [_table(table)], [("fig-discrimination", fig)])


def calibration_section(r: dict) -> Section:
    import plotly.graph_objects as go
    x = [d["as_of_date"] for d in r["dates"]]
    cal = [d["calibration"] for d in r["dates"]]
    fig = _figure(title="Mean PD against the observed default rate and the mean true PD",
                  xaxis_title="as of", yaxis_title="12-month default rate", yaxis_tickformat=".2%")
    fig.add_trace(go.Scatter(x=x, y=[c.get("mean_pd") for c in cal], mode="markers+lines",
                             name="mean PD", marker_color=THIS_RUN))
    fig.add_trace(go.Scatter(x=x, y=[c.get("observed_default_rate") for c in cal],
                             mode="markers+lines", name="observed default rate",
                             marker_color=BASELINE))
    if r["truth"]:
        fig.add_trace(go.Scatter(x=x, y=[c.get("mean_true_pd") for c in cal], mode="markers+lines",
                                 name="mean true PD (generator)", marker_color=TRUTH))
    table = pd.DataFrame([{"as_of_date": d["as_of_date"], "role": d["role"],
                           "model-scored firms": d["model_scored"],
                           "mean PD": _v(c.get("mean_pd")),
                           "observed default rate": _v(c.get("observed_default_rate")),
                           "mean true PD": _v(c.get("mean_true_pd")),
                           "mean PD / true PD − 1": _v(c.get("pd_to_true_pd_deviation"), "{:+.2%}"),
                           "Spearman(PD, true PD)": _v(c.get("spearman_pd_true_pd"))}
                          for d, c in zip(r["dates"], cal)])
    body = [_table(table)]
    if not r["truth"]:
        body.insert(0, _note("The feeds carry no ground truth (_ground_truth/): true-PD figures "
                             "are not available."))
    return Section("Calibration over time", body, [("fig-calibration-time", fig)])


def grade_section(r: dict) -> Section:
    import plotly.graph_objects as go
    pooled = [g for g in r["pooled"]["by_grade"] if g["n"]]
    grades = [g["grade"] for g in pooled]
    fig = _figure(title="By grade: mean PD, observed default rate (dates with outcomes) and mean "
                        "true PD (all dates)", xaxis_title="grade",
                  yaxis_title="12-month default rate (log scale)", barmode="group",
                  yaxis_type="log", yaxis_tickformat=".1%")
    fig.update_xaxes(type="category")
    fig.add_trace(go.Bar(x=grades, y=[g["mean_pd"] for g in pooled], name="mean PD",
                         marker_color=THIS_RUN))
    if r["pooled"]["dates"]:
        fig.add_trace(go.Bar(x=grades, y=[g.get("observed_default_rate") for g in pooled],
                             name="observed default rate", marker_color=BASELINE))
    if r["truth"]:
        fig.add_trace(go.Bar(x=grades, y=[g.get("mean_true_pd") for g in pooled],
                             name="mean true PD", marker_color=TRUTH))
    jeffreys = pd.DataFrame([{"as_of_date": d["as_of_date"], "grade": g["grade"],
                              "cell": f"{g['n_defaults']}/{g['n']}: p={g['jeffreys_p_value']:.3f}"}
                             for d in r["dates"] if d.get("auc") for g in d["by_grade"] if g["n"]])
    body = [_table(pd.DataFrame([{"grade": g["grade"], "firm-dates": g["n"],
                                  "mean PD": _v(g["mean_pd"]),
                                  "firm-dates with outcomes": g.get("n_with_outcomes", "–"),
                                  "defaults": g.get("n_defaults", "–"),
                                  "observed default rate": _v(g.get("observed_default_rate")),
                                  "mean true PD": _v(g.get("mean_true_pd"))} for g in pooled]))]
    if len(jeffreys):
        pivot = jeffreys.pivot(index="grade", columns="as_of_date", values="cell").fillna("–")
        pivot.columns.name = None
        pivot = pivot.reindex([g for g in grades if g in pivot.index]).reset_index()
        body += [f"<p>Jeffreys test per grade and date (defaults/firms: one-sided p-value that "
                 f"the grade's mean PD does not under-predict; checked where a grade holds at "
                 f"least {r['config']['jeffreys_min_firms']} firms; the grades of a date are one "
                 f"family, tested at {r['config']['min_jeffreys_p_value']} with Holm's step-down: "
                 f"the smallest of m p-values against {r['config']['min_jeffreys_p_value']} / m, "
                 f"the next against {r['config']['min_jeffreys_p_value']} / (m − 1), and so on, "
                 f"until one passes).</p>", _table(pivot)]
    return Section("Calibration by grade", body, [("fig-grades", fig)])


def range_section(r: dict) -> Section:
    import plotly.graph_objects as go
    rows = r["out_of_range"][:TOP_FEATURES]
    fig = _figure(title=f"Share of model-scored firms outside the training range (worst date; "
                        f"top {len(rows)})", xaxis_title="feature", yaxis_title="share of firms",
                  yaxis_tickformat=".1%")
    fig.add_trace(go.Bar(x=[x["feature"] for x in rows], y=[x["max_share"] for x in rows],
                         marker_color=[STATUS_COLOURS["alert"] if x["max_share"] >
                                       r["config"]["max_out_of_range_share"] else THIS_RUN
                                       for x in rows], name="outside [min, max]"))
    table = pd.DataFrame([{"feature": x["feature"], "training min": x["train_min"],
                           "training max": x["train_max"], "worst share": f"{x['max_share']:.2%}",
                           "worst date": x["worst_date"]} for x in rows])
    return Section("Inputs outside the training range", [_table(table, "{:.4g}")],
                   [("fig-out-of-range", fig)])


def monotonicity_section(r: dict) -> Section:
    import plotly.graph_objects as go
    m = r["monotonicity"]
    rows = m["features"]
    fig = _figure(title="PD decreases when a feature moves one training std towards risk",
                  xaxis_title="feature", yaxis_title="firms whose PD fell")
    fig.add_trace(go.Bar(x=[x["feature"] for x in rows], y=[x["violations"] for x in rows],
                         marker_color=STATUS_COLOURS["alert"], name="violations"))
    bad = [x for x in rows if x["violations"]]
    body = [f"<p>{m['n_firms']:,} model-scored firms as of {_esc(m['as_of_date'])} (seeded "
            f"sample), through the exported SavedModel; each of the {len(rows)} inputs with a "
            f"declared risk direction moved alone; a violation is a PD lower by more than "
            f"{m['tolerance']:g}. Total: <b>{m['violations']:,}</b>.</p>"]
    body.append(_table(pd.DataFrame(bad)[["feature", "direction", "step", "n_moved", "violations",
                                          "max_pd_decrease"]], "{:.4g}") if bad else
                _note("No violation: the PD never fell when an input moved towards risk."))
    return Section("Monotonicity in the declared risk directions", body,
                   [("fig-monotonicity", fig)])


def points_section(r: dict) -> Section:
    import plotly.graph_objects as go
    rows = r["mean_abs_points"][:TOP_FEATURES][::-1]
    last = r["dates"][-1]["as_of_date"]
    fig = _figure(title=f"Mean |points| per feature (top {len(rows)} as of {last})",
                  xaxis_title="mean |points|", height=560, barmode="group")
    fig.add_trace(go.Bar(y=[x["feature"] for x in rows], x=[x["baseline"] for x in rows],
                         orientation="h", name="training baseline", marker_color=BASELINE))
    fig.add_trace(go.Bar(y=[x["feature"] for x in rows], x=[x["last_date"] for x in rows],
                         orientation="h", name=f"as of {last}", marker_color=THIS_RUN))
    table = pd.DataFrame(r["mean_abs_points"][:TOP_FEATURES]).rename(columns={
        "last_date": f"as of {last}", "all_dates": "all dates", "baseline": "training baseline"})
    return Section("Mean |points| per feature", [_table(table, "{:.2f}")], [("fig-points", fig)])


def challenger_section(r: dict) -> Section:
    import plotly.graph_objects as go
    rows = r["challengers"]
    shown = [x for x in rows if x["auc"] is not None]
    fig = _figure(title="Out-of-time test AUC of the model card: the model and its challengers",
                  xaxis_title="model", yaxis_title="AUC")
    fig.add_trace(go.Bar(x=[x["model"] for x in shown], y=[x["auc"] for x in shown],
                         marker_color=[THIS_RUN if x["key"] == "test" else BASELINE for x in shown],
                         name="AUC"))
    table = pd.DataFrame([{"model": x["model"], "AUC": _v(x["auc"]),
                           "AUC minus this model [95% CI]": _difference(x.get("auc_minus_model")),
                           "KS": _v(x["ks"]), "mean PD": _v(x["mean_pd"])} for x in rows])
    return Section("Challengers", [
        "<p>From the model card: the same out-of-time test rows for every model (n/a: the card "
        "does not carry it). The interval is a paired bootstrap over firms: both models scored on "
        "every resample, so it says whether the gap is more than the test defaults can tell "
        "apart.</p>", _table(table)], [("fig-challengers", fig)])


def _difference(d) -> str:
    if not d:
        return ""
    return f"{d['value']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


SECTIONS = (checks_section, discrimination_section, calibration_section, grade_section,
            range_section, monotonicity_section, points_section, challenger_section)


def render(result: dict) -> str:
    return run_report.page(f"smescore validation {result['version']}", header(result),
                           [build(result) for build in SECTIONS])


def write_report(result: dict, out: str) -> str:
    """Write the report to the local file `out` atomically; returns its path."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".report-", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render(result))
    os.replace(tmp, out)
    return out
