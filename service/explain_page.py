"""One firm's score explained, for a credit officer: a self-contained HTML page (inline SVG, no
script, no external asset).

The waterfall starts from the base points (the score before any feature speaks), adds each
feature's points (the largest named, the rest grouped) and ends at the score before clamping and
rounding; the published score is that, clamped to the scale and rounded half up. Beside it: the
reasons, the firm's values next to the typical firm's (the model's training median or most frequent
category), and the model version. Every bar carries its points in `data-points`, so a test (or an
auditor) can add them up.
"""
from __future__ import annotations

import html
from typing import Literal, Mapping

from models.reasons import TypicalFirm
from models.scorecard import ScoreScale
from transforms import catalog

Lang = Literal["zh", "en"]
TOP_FEATURES = 10
# a Chinese font first where the system has one (Chromium falls back per glyph anyway)
FONTS = ("'Noto Sans CJK SC','Source Han Sans SC','WenQuanYi Micro Hei','Microsoft YaHei',"
         "'PingFang SC',sans-serif")

_T = {
    "title": ("评分解释", "Score explanation"),
    "firm": ("企业", "Firm"), "as_of": ("评分日期", "As of"), "model": ("模型版本", "Model version"),
    "role": ("模型角色", "Model role"), "source": ("评分来源", "Scored by"),
    "score": ("评分", "Score"), "grade": ("等级", "Grade"), "pd": ("违约概率", "PD (12 months)"),
    "base": ("基础分", "Base points"), "others": ("其余{n}项特征", "{n} other features"),
    "unclamped": ("合计（取整前）", "Total before rounding"),
    "reasons": ("主要扣分原因", "Main reasons"), "no_reasons": ("无", "None"),
    "values": ("企业数值与典型企业对比", "The firm's values beside the typical firm's"),
    "feature": ("特征", "Feature"), "value": ("本企业", "This firm"),
    "typical": ("典型企业", "Typical firm"), "points": ("分值", "Points"),
    "in_default": ("该企业已逾期90天以上：等级D，评分取下限，无特征分解。",
                   "The firm is already 90+ days past due: grade D, the floor score, no "
                   "breakdown by feature."),
    "published": ("公布评分 = 合计在{lo}–{hi}范围内四舍五入", "Published score = the total, "
                  "clamped to {lo}–{hi} and rounded"),
    "model_src": ("模型", "model"), "rules_src": ("冷启动规则（历史不足6个月）",
                                               "cold-start rules (under 6 months of history)"),
    "in_default_src": ("已违约", "in default"),
    "champion_role": ("冠军模型", "champion"), "canary_role": ("灰度模型（金丝雀）", "canary"),
    "challenger_role": ("挑战者模型", "challenger"),
}


def _t(key: str, lang: Lang, **kw) -> str:
    return _T[key][0 if lang == "zh" else 1].format(**kw)


def _role(role: str, lang: Lang) -> str:
    key = f"{role}_role"
    return _t(key, lang) if key in _T else role


def _name(feature: str, lang: Lang) -> str:
    f = catalog.BY_NAME[feature]
    return f.desc_zh if lang == "zh" else f.desc_en


def waterfall_steps(score: Mapping, top: int = TOP_FEATURES) -> list[tuple[str, float]]:
    """[(feature or '__others__:n', points)]: the `top` largest by size, then the rest summed."""
    ranked = sorted(score["points"].items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    steps = list(ranked[:top])
    rest = ranked[top:]
    if rest:
        steps.append((f"__others__:{len(rest)}", sum(p for _, p in rest)))
    return steps


LABEL_W, BAR_W, FONT_PX = 400, 380, 12
LINE_H, ROW_PAD = 15, 11


def label_lines(name: str, width_px: float = LABEL_W - 8, font_px: float = FONT_PX) -> list[str]:
    """The label in lines that fit the label column (the catalogue's English descriptions run to
    115 characters): words kept whole, a Chinese character a full em, a Latin one about 0.55 em."""
    def width(text):
        return sum(font_px if ord(c) >= 0x2E80 else 0.55 * font_px for c in text)

    sep = " " if " " in name else ""        # Chinese descriptions break between characters
    lines, line = [], ""
    for word in name.split(" ") if sep else name:
        joined = line + sep + word if line else word
        if line and width(joined) > width_px:
            lines.append(line)
            line = word
        else:
            line = joined
    return lines + [line]


def _svg(score: Mapping, lang: Lang) -> str:
    base = score["base_points"]
    steps = waterfall_steps(score)
    totals = [base]
    for _, p in steps:
        totals.append(totals[-1] + p)
    lo, hi = min(totals), max(totals)
    pad = max(5.0, (hi - lo) * 0.08)
    lo, hi = lo - pad, hi + pad

    def x(v):
        return LABEL_W + (v - lo) / (hi - lo) * BAR_W

    # (label, bar from, bar to, value, kind, feature): the levels start at the plot's left edge
    bars = [(_t("base", lang), x(lo), x(base), base, "base", "")]
    for (feature, p), before, after in zip(steps, totals, totals[1:]):
        name = (_t("others", lang, n=feature.split(":")[1]) if feature.startswith("__others__")
                else _name(feature, lang))
        a, b = sorted((x(before), x(after)))
        bars.append((name, a, b, p, "up" if p >= 0 else "down", feature))
    bars.append((_t("unclamped", lang), x(lo), x(totals[-1]), totals[-1], "total", ""))
    rows, y = [], 10
    for name, a, b, value, kind, feature in bars:
        lines = label_lines(name)
        rows.append(_bar(y, lines, a, b, value, kind, feature))
        y += LINE_H * len(lines) + ROW_PAD
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + BAR_W + 90}" '
            f'height="{y + 10}" role="img" aria-label="waterfall" font-family="{FONTS}" '
            f'font-size="{FONT_PX}">' + "".join(rows) + "</svg>")


def _bar(y, lines, a, b, value, kind, feature="") -> str:
    """One row: its label (one or two lines), the bar from a to b (at least 1 px), the value."""
    color = {"base": "#7f8c8d", "up": "#2e8b57", "down": "#c0392b", "total": "#34495e"}[kind]
    shown = f"{value:+.1f}" if kind in ("up", "down") else f"{value:.1f}"
    attrs = (f'data-kind="{kind}" data-points="{value!r}"' if kind in ("up", "down")
             else f'data-kind="{kind}" data-value="{value!r}"')
    height = LINE_H * len(lines) + ROW_PAD - 8
    mid = y + 4 + height / 2 + FONT_PX / 3                  # the baseline of a centred line
    first = mid - (len(lines) - 1) * LINE_H / 2
    label = "".join(f'<tspan x="{LABEL_W - 8}" y="{first + k * LINE_H:.1f}">'
                    f'{html.escape(t)}</tspan>' for k, t in enumerate(lines))
    return (f'<g class="step" {attrs} data-feature="{html.escape(feature)}">'
            f'<text text-anchor="end">{label}</text>'
            f'<rect x="{a:.2f}" y="{y + 4}" width="{max(b - a, 1):.2f}" height="{height}" '
            f'fill="{color}"/><text x="{max(a, b) + 6:.2f}" y="{mid:.1f}">{shown}</text></g>')


def render(score: Mapping, values: Mapping, typical: TypicalFirm | None, lang: Lang,
           scale: ScoreScale) -> str:
    """The page of one firm's answer (service.app.firm_score) with its feature values."""
    e = html.escape
    source = score["score_source"]
    head = [(_t("firm", lang), score["enterprise_id"]), (_t("as_of", lang), str(score["as_of_date"])),
            (_t("model", lang), score["model_version"]),
            (_t("role", lang), _role(score["model_role"], lang)),
            (_t("source", lang), _t(f"{source}_src", lang)),
            (_t("score", lang), str(score["score"])), (_t("grade", lang), score["grade"]),
            (_t("pd", lang), f"{score['pd']:.4%}")]
    parts = [f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
             f'<meta charset="utf-8"><title>{e(_t("title", lang))} {e(score["enterprise_id"])}'
             f'</title><style>body{{font-family:{FONTS};margin:24px;color:#222}}'
             f'table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;'
             f'text-align:left}}td.num{{text-align:right}}</style></head><body>',
             f'<h1>{e(_t("title", lang))}</h1><table class="summary">']
    parts += [f'<tr><th>{e(k)}</th><td data-field="{i}">{e(v)}</td></tr>'
              for i, (k, v) in enumerate(head)]
    parts.append(f'</table><p id="score" data-score="{score["score"]}" '
                 f'data-base="{score["base_points"]!r}">')
    if source == "in_default":
        parts.append(e(_t("in_default", lang)) + "</p>")
    else:
        parts.append(e(_t("published", lang, lo=int(scale.min_score), hi=int(scale.max_score)))
                     + "</p>" + _svg(score, lang))
    parts.append(f'<h2>{e(_t("reasons", lang))}</h2><ol class="reasons">')
    parts += [f'<li data-code="{e(r["code"])}" data-points="{r["points"]!r}">'
              f'{e(r["text_zh"] if lang == "zh" else r["text_en"])} ({r["points"]:+.1f})</li>'
              for r in score["reasons"]]
    if not score["reasons"]:
        parts.append(f"<li>{e(_t('no_reasons', lang))}</li>")
    parts.append("</ol>")
    if score["points"]:
        parts.append(f'<h2>{e(_t("values", lang))}</h2><table class="values"><tr>'
                     + "".join(f"<th>{e(_t(k, lang))}</th>" for k in
                               ("feature", "value", "typical", "points")) + "</tr>")
        for feature, p in sorted(score["points"].items(), key=lambda kv: (kv[1], kv[0])):
            f = catalog.BY_NAME[feature]
            typ = typical.value(feature) if typical is not None else None
            parts.append(f'<tr data-feature="{e(feature)}"><td>{e(_name(feature, lang))}</td>'
                         f'<td>{e(catalog.render_value(f, values.get(feature), lang))}</td>'
                         f'<td>{e(catalog.render_value(f, typ, lang))}</td>'
                         f'<td class="num">{p:+.2f}</td></tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
