"""The HTML run report: one self-contained file per as-of date, readable offline.

`smescore report --as-of D` (and the nightly job with --report_dir) reads the published risk tables
and the model card and writes: score and grade distributions against the training references (the
card's fixed score bands over the book at the training date and over the training sample) and the
previous run, PSI per feature against both, the share of firms outside each input's training range,
top portfolio risk drivers, cold-start share, the challenger comparison, and backtest ROC and
calibration when a backtest exists.

Plots are plotly figures; plotly.js is embedded once in the file (no CDN, nothing fetched), and every
figure has a fixed element id, so the same tables give the same bytes. Sections without data say so
("no backtest yet") instead of disappearing.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import html
import os
import posixpath
import tempfile

import numpy as np
import pandas as pd

from smescore import files, tables
from smescore.monitoring import report_data
from smescore.monitoring.report_data import ReportData

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
BASELINE, TRAINING_SAMPLE, THIS_RUN = "#9e9e9e", "#d0d0d0", "#1f77b4"
STATUS_COLOURS = {"ok": "#2ca02c", "warn": "#ff7f0e", "alert": "#d62728"}
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;
color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}
.note{color:#666;font-style:italic}.kpi{display:inline-block;margin-right:2em}
.kpi b{font-size:1.3em;display:block}
"""


@dataclasses.dataclass
class Section:
    title: str
    body: list[str]                  # HTML fragments
    figures: list = dataclasses.field(default_factory=list)   # (div id, plotly figure)


def _esc(x) -> str:
    return html.escape(str(x))


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    return frame.to_html(index=False, escape=True, border=0,
                         float_format=lambda v: floats.format(v), na_rep="–")


def _figure(**layout):
    import plotly.graph_objects as go
    fig = go.Figure()
    fig.update_layout(**{"template": "plotly_white", "margin": dict(l=60, r=20, t=50, b=50),
                         "height": 380, **layout})
    return fig


def band_labels(edges) -> list[str]:
    e = [int(x) if float(x).is_integer() else x for x in edges]
    return [f"< {e[0]}"] + [f"{a}–{b}" for a, b in zip(e[:-1], e[1:])] + [f"≥ {e[-1]}"]


def band_shares(scores: pd.DataFrame, edges) -> np.ndarray:
    """Shares of firms per score band; bin i is [edge[i-1], edge[i]), as the baseline's."""
    idx = np.searchsorted(np.asarray(edges, np.float64), scores["score"].to_numpy(np.float64),
                          side="right")
    counts = np.bincount(idx, weights=scores["n"].to_numpy(np.float64), minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


# ----------------------------------------------------------------------------- sections

def header(d: ReportData) -> str:
    r = d.run
    rows_in = ", ".join(f"{x['feed']} {x['rows']:,}" for x in r["rows_in"])
    n = int(d.sources["n"].sum())
    kpis = [("firms scored", f"{n:,}"), ("model-scored", f"{int(r['firms_scored_model']):,}"),
            ("cold-start rules", f"{int(r['firms_scored_rules']):,}"),
            ("feed records rejected", f"{int(r['rows_rejected']):,}")]
    return (f"<h1>smescore run report — portfolio as of {_esc(d.as_of)}</h1>"
            f"<p>Run <code>{_esc(r['run_id'])}</code>"
            f" · model <code>{_esc(r['model_version'])}</code>"
            f" · started {_esc(r['started_at'])} UTC, finished {_esc(r['finished_at'])} UTC</p>"
            + "".join(f'<span class="kpi"><b>{_esc(v)}</b>{_esc(k)}</span>' for k, v in kpis)
            + f"<p>Records read: {_esc(rows_in)}.</p>")


def score_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    edges = d.baseline_score["edges"] if d.baseline_score else report_data.SCORE_EDGES
    labels = band_labels(edges)
    fig = _figure(title="Scores of model-scored firms: this run against the training references",
                  xaxis_title="score band", yaxis_title="share of firms", barmode="group",
                  yaxis_tickformat=".0%")
    body = []
    if d.baseline_score:
        fig.add_trace(go.Bar(x=labels, y=d.baseline_score["shares"],
                             name="book at the training date", marker_color=BASELINE))
    else:
        body.append(_note(d.card_note))
    if d.training_sample_score and d.training_sample_score["edges"] == list(edges):
        fig.add_trace(go.Bar(x=labels, y=d.training_sample_score["shares"], name="training sample",
                             marker_color=TRAINING_SAMPLE))
    fig.add_trace(go.Bar(x=labels, y=band_shares(d.score_counts, edges), name=f"as of {d.as_of}",
                         marker_color=THIS_RUN))
    score = d.drift[(d.drift.feature == tables.SCORE_FEATURE) & (d.drift.segment == "all")
                    ].set_index("metric")
    against = [f"against the {what}: <b>{score.value[m]:.4f}</b> ({_esc(score.status[m])})"
               for m, what in (("psi", "book as of the training date"),
                               ("psi_training_sample", "training sample")) if m in score.index]
    body.append(f"<p>Score PSI {'; '.join(against)}.</p>" if against else
                _note("No score PSI for this run (no drift rows)."))
    body.append(_note("Model-scored firms only, as in both references (scored by the exported "
                      "model at training); rules-scored and in-default firms are in the grades "
                      "below."))
    return Section("Score distribution", body, [("fig-score", fig)])


def grade_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    fig = _figure(title="Grade distribution", xaxis_title="grade (1 best .. 10, D in default)",
                  yaxis_title="share of firms", barmode="group", yaxis_tickformat=".0%")
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(tables.GRADES))
    body = []
    for date, colour in ((d.previous_as_of, BASELINE), (d.as_of, THIS_RUN)):
        if date is None:
            body.append(_note("No earlier run in the warehouse to compare the grades with."))
            continue
        g = d.grades[d.grades.as_of_date == date].set_index("grade")["n"]
        g = g.reindex(list(tables.GRADES), fill_value=0)
        fig.add_trace(go.Bar(x=list(g.index), y=g / max(g.sum(), 1), name=f"as of {date}",
                             marker_color=colour, customdata=g.to_numpy(),
                             hovertemplate="grade %{x}: %{y:.1%} (%{customdata} firms)"))
    body.append(_note("The training baseline is held on score bands (above); grades are compared "
                      "with the previous published run."))
    return Section("Grade distribution", body, [("fig-grades", fig)])


# drift metric per feature -> (figure id, title, x axis title, x tick format)
FEATURE_DRIFT_FIGURES = {
    "psi": ("fig-psi", "PSI per model feature against the book as of the training date", "PSI", ""),
    "psi_training_sample": ("fig-psi-training-sample",
                            "PSI per model feature against the training sample", "PSI", ""),
    "out_of_range": ("fig-out-of-range", "Model-scored firms outside the training range, per "
                     "numeric input", "share of firms", ".1%"),
}


def _status_bars(rows: pd.DataFrame, title: str, xaxis_title: str, tickformat: str):
    """One horizontal bar per feature, coloured by status, with the warn and alert lines."""
    import plotly.graph_objects as go
    rows = rows.sort_values(["value", "feature"])
    fig = _figure(title=title, xaxis_title=xaxis_title, height=max(380, 16 * len(rows) + 120),
                  xaxis_tickformat=tickformat)
    fig.add_trace(go.Bar(x=rows.value, y=rows.feature, orientation="h", showlegend=False,
                         marker_color=[STATUS_COLOURS[s] for s in rows.status]))
    for x, dash in ((rows.warn_threshold.iloc[0], "dot"), (rows.threshold.iloc[0], "dash")):
        fig.add_vline(x=float(x), line_dash=dash, line_color="#555")
    return fig


def out_of_range_table(d: ReportData) -> str:
    """Inputs with firms outside the training range, with the range itself (from the card)."""
    rows = d.drift[(d.drift.metric == "out_of_range") & (d.drift.value > 0)]
    if rows.empty:
        return _note("Every numeric input of every model-scored firm lies within its training "
                     "range.")
    ranges = d.training_distribution or {}
    shown = pd.DataFrame({
        "feature": rows.feature, "share_outside": rows.value,
        "training_min": [ranges.get(f, {}).get("min") for f in rows.feature],
        "training_max": [ranges.get(f, {}).get("max") for f in rows.feature],
        "status": rows.status}).sort_values(["share_outside", "feature"], ascending=[False, True])
    return ("<p>Inputs with model-scored firms outside the training sample's range "
            "(the network extrapolates for them):</p>" + _table(shown))


def drift_section(d: ReportData) -> Section:
    features = d.drift[(d.drift.feature != tables.SCORE_FEATURE) & (d.drift.segment == "all")]
    if features.empty:
        return Section("Feature drift", [_note("No drift measured for this run.")])
    figures = []
    for metric, (fid, title, xaxis_title, tickformat) in FEATURE_DRIFT_FIGURES.items():
        rows = features[features.metric == metric]
        if len(rows):
            figures.append((fid, _status_bars(rows, title, xaxis_title, tickformat)))
    flagged = d.drift[d.drift.status != "ok"].sort_values(["metric", "value"],
                                                           ascending=[True, False])
    counts = (d.drift.groupby(["metric", "status"]).size().unstack(fill_value=0)
              .rename_axis(columns=None).reset_index())
    body = ["<p>Two references: the book as of the training date (<code>psi</code>: has the "
            "portfolio or its data changed since?) and the training sample "
            "(<code>psi_training_sample</code>, <code>out_of_range</code>: is the network asked "
            "about firms unlike those it learned from?).</p>",
            "<p>Features per drift metric and status:</p>", _table(counts),
            (_table(flagged[["feature", "segment", "metric", "value", "warn_threshold", "threshold",
                             "status"]])
             if len(flagged) else _note("Every drift measure is ok."))]
    measured = set(features.metric)
    if "out_of_range" in measured:
        body.append(out_of_range_table(d))
    unmeasured = sorted({"psi_training_sample", "out_of_range"} - measured)
    if unmeasured:
        body.append(_note(f"Not measured in this run: {', '.join(unmeasured)} (the model card "
                          f"predates the training sample references; retrain to measure them)."))
    return Section("Feature drift", body, figures)


def drivers_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    if d.drivers.empty:
        return Section("Top portfolio risk drivers", [_note("No reasons in this run.")])
    top = d.drivers.iloc[::-1]
    fig = _figure(title="Top risk drivers: firms whose reasons include the feature",
                  xaxis_title="firms", height=max(380, 28 * len(top) + 120))
    fig.add_trace(go.Bar(x=top.n_firms, y=top.feature, orientation="h", showlegend=False,
                         customdata=top[["mean_points", "description"]].to_numpy(),
                         hovertemplate="%{y}: %{x} firms, mean %{customdata[0]:.1f} points"
                                       "<br>%{customdata[1]}<extra></extra>",
                         marker_color="#8c564b"))
    shown = d.drivers[["feature", "description", "n_firms", "share_of_firms", "mean_points"]]
    return Section("Top portfolio risk drivers", [_table(shown, "{:.3f}")], [("fig-drivers", fig)])


def sources_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    s = d.sources.set_index("score_source")["n"].reindex(list(tables.SCORE_SOURCES), fill_value=0)
    total = max(int(s.sum()), 1)
    fig = _figure(title="Who scored the firms", yaxis_title="firms")
    fig.add_trace(go.Bar(x=list(s.index), y=s.to_numpy(), text=[f"{v / total:.1%}" for v in s],
                         showlegend=False, marker_color=["#1f77b4", "#ff7f0e", "#7f7f7f"]))
    return Section("Cold-start share", [
        f"<p>Cold-start share (rules-scored firms, history shorter than the model needs): "
        f"<b>{s['rules'] / total:.2%}</b> ({int(s['rules']):,} of {total:,} firms).</p>"],
        [("fig-sources", fig)])


def challenger_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    c = d.challenger
    if c.empty:
        return Section("Champion / challenger", [_note("No challenger scored in this run.")])
    summary = (c[c.metric != "grade_migration"]
               .pivot_table(index=["champion_version", "challenger_version"], columns="metric",
                            values="value", aggfunc="first").rename_axis(columns=None).reset_index())
    section = Section("Champion / challenger", [_table(summary)])
    for i, (version, m) in enumerate(c[c.metric == "grade_migration"].groupby("challenger_version")):
        grid = (m.pivot_table(index="from_grade", columns="to_grade", values="value", aggfunc="sum")
                .reindex(index=list(tables.GRADES), columns=list(tables.GRADES)).fillna(0))
        fig = _figure(title=f"Grade migration: champion (rows) → challenger {version} (columns)",
                      xaxis_title="challenger grade", yaxis_title="champion grade", height=460)
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index),
                                 colorscale="Blues", texttemplate="%{z:.0f}"))
        fig.update_xaxes(type="category")
        fig.update_yaxes(type="category", autorange="reversed")
        section.figures.append((f"fig-migration-{i}", fig))
    return section


def backtest_section(d: ReportData) -> Section:
    import plotly.graph_objects as go
    if d.backtest_as_of is None:
        return Section("Backtest", [_note("No backtest yet: outcomes of a scored cohort 12 months "
                                          "on are not in the warehouse (run `smescore backtest`).")])
    perf = d.performance
    overall = perf[perf.segment_type == "all"][
        ["model_version", "n_firms", "n_defaults", "auc", "ks", "gini", "brier",
         "predicted_default_rate", "observed_default_rate", "calibration_status"]]
    body = [f"<p>Cohort scored as of {_esc(d.backtest_as_of)}, outcomes over the following "
            f"{int(perf.outcome_months.max())} months.</p>", _table(overall)]
    if d.card_auc is not None:
        body.append(f"<p>Model card (out-of-time test) AUC: <b>{d.card_auc:.4f}</b>.</p>")
    section = Section("Backtest", body)
    if not d.roc.empty:
        fig = _figure(title="ROC of the backtest", xaxis_title="false positive rate",
                      yaxis_title="true positive rate", height=420)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random",
                                 line=dict(dash="dot", color=BASELINE)))
        for version, r in d.roc.groupby("model_version"):
            auc = overall.loc[overall.model_version == version, "auc"]
            fig.add_trace(go.Scatter(x=r.false_positive_rate, y=r.true_positive_rate, mode="lines",
                                     name=f"{version} (AUC {auc.iloc[0]:.3f})" if len(auc) and
                                     pd.notna(auc.iloc[0]) else version))
        section.figures.append(("fig-roc", fig))
    grades = perf[perf.segment_type == "grade"]
    if not grades.empty:
        fig = _figure(title="Calibration per grade: observed against predicted default rate",
                      xaxis_title="grade", yaxis_title="12-month default rate", barmode="group",
                      yaxis_tickformat=".1%")
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(tables.GRADES))
        for version, g in grades.groupby("model_version"):
            fig.add_trace(go.Bar(x=g.segment, y=g.predicted_default_rate,
                                 name=f"{version} predicted", marker_color=BASELINE))
            fig.add_trace(go.Bar(x=g.segment, y=g.observed_default_rate, name=f"{version} observed",
                                 marker_color=THIS_RUN, customdata=g[["n_firms", "n_defaults"]],
                                 hovertemplate="grade %{x}: %{y:.2%} "
                                               "(%{customdata[1]} of %{customdata[0]} firms)"))
        section.figures.append(("fig-calibration", fig))
        section.body.append(_table(grades[["model_version", "segment", "n_firms", "n_defaults",
                                           "predicted_default_rate", "observed_default_rate",
                                           "binomial_p_value", "calibration_status"]]))
    return section


SECTIONS = (score_section, grade_section, drift_section, drivers_section, sources_section,
            challenger_section, backtest_section)


# ----------------------------------------------------------------------------- assembly

def page(title: str, header_html: str, sections) -> str:
    """A self-contained HTML page: the header, then each Section's heading, body and figures."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs
    parts = []
    for s in sections:
        parts.append(f"<h2>{_esc(s.title)}</h2>" + "".join(s.body))
        parts += [pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                              config=PLOT_CONFIG) for div_id, fig in s.figures]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style>"
            # plotly.js inline, once: the report works offline and fetches nothing.
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            + header_html + "\n".join(parts) + "</body></html>\n")


def render(d: ReportData) -> str:
    return page(f"smescore run report {d.as_of}", header(d), [build(d) for build in SECTIONS])


def write_report(warehouse, as_of: dt.date, out: str, registry: str | None = None) -> str:
    """Write the report of `as_of`'s published run to `out` (atomically; a gs:// one is uploaded
    whole); returns the path. `warehouse`: a DuckDB file or a reader of the risk tables."""
    page = render(report_data.load(warehouse, as_of, registry))
    if files.is_remote(out):
        with tempfile.TemporaryDirectory(prefix="smescore-report-") as local:
            tmp = os.path.join(local, "report.html")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(page)
            files.upload(tmp, out)
        return out
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".report-", suffix=".html")
    files.as_created(tmp)     # mkstemp's 0600 would keep the report from the risk team
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, out)
    return out


def report_path(report_dir: str, as_of: dt.date) -> str:
    """One file per as-of date: a rerun of the date replaces it, like the data."""
    return posixpath.join(report_dir, f"run-report-{as_of}.html") if files.is_remote(report_dir) \
        else os.path.join(report_dir, f"run-report-{as_of}.html")
