"""The feature catalogue: every business feature, declared once.

TFT preprocessing, the model's input order, SHAP grouping, reason codes and table schemas all read
this module; nothing else names features. No TensorFlow here.

Conventions
- Windows count complete calendar months ending with the *reference month*: the month of the as-of
  date D when D is a month-end, else the month before. Monthly filings (tax, power) for a period are
  known only once filed, so their windows end one period earlier (the return filed in the reference
  month).
- Money is CNY, power kWh; `*_chg_*` and `*_yoy_*` features are relative changes (0.25 = +25%),
  missing when the base period is empty.
- A missing value stays missing (NaN) here; imputation happens only inside the TFT graph.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers

# Risk families: what a reason is about. The generator's drivers map onto these (synth/truth.py).
FAMILIES = (
    "sales", "purchases", "concentration", "invoice_quality", "tax_compliance", "headcount",
    "power", "governance", "litigation", "related_party", "firmographic", "history", "arrears",
)
KINDS = ("amount", "count", "number", "age", "pct_change", "share", "ratio", "months", "days", "kwh", "people",
         "years", "slope", "category")


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    feed: str               # source feed (transforms.feeds), or 'derived' when it mixes feeds
    family: str             # one of FAMILIES
    kind: str               # how a value reads in a sentence; one of KINDS
    desc_zh: str
    desc_en: str
    # How a reason names the feature (see reason_text): the window it covers and what it measures,
    # e.g. ('近12个月', '销项发票') / ('in the last 12 months', 'sales invoices').
    period_zh: str
    subject_zh: str
    period_en: str
    subject_en: str
    risk_direction: int     # +1: higher is riskier, -1: lower is riskier, 0: not monotone / unknown
    transform: str          # TFT treatment: 'log' (heavy-tailed, >= 0), 'z', 'signed_log', 'vocab'
    worse_zh: str = ""      # the comparative of the risky side, where the kind's ('少于') reads badly
    worse_en: str = ""
    unit_zh: str = ""       # what a 'number' counts in Chinese: 张 (invoices), 家 (firms); default 个
    cap: float | None = None  # values above it count as it (see CAPS below)
    book_relative: bool = False  # the value less the book's median at the date (BOOK_RELATIVE)
    code: str = ""          # stable reason code, filled in below

    @property
    def dtype(self) -> str:
        return "string" if self.transform == "vocab" else "float32"

    @property
    def is_categorical(self) -> bool:
        return self.transform == "vocab"


def _F(name, feed, family, kind, desc_zh, desc_en, zh, en, direction, transform, **wording):
    """zh, en: (period, subject) of the reason sentences."""
    return Feature(name, feed, family, kind, desc_zh, desc_en, *zh, *en, direction, transform,
                   **wording)


_WIN_ZH = {1: "近1个月", 3: "近3个月", 6: "近6个月", 12: "近12个月", 36: "近36个月"}
_WIN_EN = {1: "in the last month", 3: "in the last 3 months", 6: "in the last 6 months",
           12: "in the last 12 months", 36: "in the last 36 months"}


def _windowed(prefix, feed, family, kind, zh, en, transform, direction, subject_zh, subject_en,
              windows=(1, 3, 6, 12), **wording):
    """One feature per window: '{prefix}_{w}m' with the window named in both languages."""
    return [_F(f"{prefix}_{w}m", feed, family, kind, f"{_WIN_ZH[w]}{zh}", f"{en} {_WIN_EN[w]}",
               (_WIN_ZH[w], subject_zh), (_WIN_EN[w], subject_en), direction, transform, **wording)
            for w in windows]


FEATURES: tuple[Feature, ...] = tuple([
    # --- invoices: sales ---
    *_windowed("inv_sales_amt", "invoices", "sales", "amount", "开票销售额", "Invoiced sales", "log", -1,
               "开票销售额", "invoiced sales"),
    *_windowed("inv_sales_cnt", "invoices", "sales", "number", "销项发票张数", "Sales invoices issued", "log",
               -1, "销项发票", "sales invoices", unit_zh="张"),
    _F("inv_sales_chg_3m", "invoices", "sales", "pct_change", "近3个月开票金额环比变化",
       "Change in invoiced sales, last 3 months vs prior 3",
       ("近3个月", "开票金额较前3个月"), ("in the last 3 months vs the prior 3", "growth in invoiced sales"),
       -1, "z"),
    _F("inv_sales_chg_6m", "invoices", "sales", "pct_change", "近6个月开票金额较前6个月变化",
       "Change in invoiced sales, last 6 months vs prior 6",
       ("近6个月", "开票金额较前6个月"), ("in the last 6 months vs the prior 6", "growth in invoiced sales"),
       -1, "z"),
    _F("inv_sales_chg_1m", "invoices", "sales", "pct_change", "上月开票金额较前3个月月均变化",
       "Change in last month's invoiced sales vs the prior 3-month average",
       ("上月", "开票金额较前3个月月均"), ("last month vs the prior 3-month average", "growth in invoiced sales"),
       -1, "z"),
    _F("inv_sales_yoy_3m", "invoices", "sales", "pct_change", "近3个月开票金额同比变化",
       "Year-on-year change in invoiced sales, last 3 months",
       ("近3个月", "开票金额同比"), ("in the last 3 months, year on year", "growth in invoiced sales"), -1, "z"),
    _F("inv_sales_vol_12m", "invoices", "sales", "ratio", "近12个月月度开票金额波动系数",
       "Volatility (coefficient of variation) of monthly invoiced sales, 12 months",
       ("近12个月", "月度开票金额波动系数"), ("over the last 12 months", "volatility of monthly invoiced sales"),
       1, "z"),
    _F("inv_sales_slope_12m", "invoices", "sales", "slope", "近12个月开票金额趋势",
       "Trend of monthly invoiced sales over 12 months (log-scale slope per month)",
       ("近12个月", "开票金额趋势"), ("over the last 12 months", "trend in invoiced sales"), -1, "z"),
    _F("inv_months_no_sales_12m", "invoices", "sales", "months", "近12个月无开票月数",
       "Months without sales invoices in the last 12",
       ("近12个月", "无开票的月份有"), ("of the last 12", "months without any sales invoice"), 1, "z"),
    _F("inv_avg_ticket_3m", "invoices", "sales", "amount", "近3个月平均单张开票金额",
       "Average sales invoice amount, last 3 months",
       ("近3个月", "平均单张开票金额"), ("in the last 3 months", "average sales invoice"), 0, "log"),
    # --- invoices: purchases ---
    *_windowed("inv_purch_amt", "invoices", "purchases", "amount", "进项采购额", "Purchases invoiced", "log",
               -1, "进项采购额", "invoiced purchases"),
    _F("inv_purch_chg_3m", "invoices", "purchases", "pct_change", "近3个月进项金额环比变化",
       "Change in purchases, last 3 months vs prior 3",
       ("近3个月", "进项金额较前3个月"), ("in the last 3 months vs the prior 3", "growth in invoiced purchases"),
       -1, "z"),
    _F("inv_purch_sales_ratio_3m", "invoices", "purchases", "ratio", "近3个月进销比",
       "Purchases to sales ratio, last 3 months",
       ("近3个月", "进项与销项金额之比"), ("in the last 3 months", "purchases-to-sales ratio"), 1, "log"),
    _F("inv_n_suppliers_12m", "invoices", "purchases", "number", "近12个月供应商数",
       "Distinct suppliers in the last 12 months",
       ("近12个月", "供应商"), ("in the last 12 months", "suppliers"), -1, "log", unit_zh="家"),
    # --- invoices: customer concentration ---
    _F("inv_top1_share_12m", "invoices", "concentration", "share", "近12个月第一大客户销售占比",
       "Share of sales to the largest customer, 12 months",
       ("近12个月", "第一大客户销售占比"), ("in the last 12 months", "share of sales to the largest customer"),
       1, "z"),
    _F("inv_hhi_12m", "invoices", "concentration", "ratio", "近12个月客户集中度（赫芬达尔指数）",
       "Customer concentration (Herfindahl index), 12 months",
       ("近12个月", "客户集中度指数"), ("in the last 12 months", "customer concentration (Herfindahl index)"),
       1, "z"),
    _F("inv_n_customers_12m", "invoices", "concentration", "number", "近12个月客户数",
       "Distinct customers in the last 12 months",
       ("近12个月", "客户"), ("in the last 12 months", "customers"), -1, "log", unit_zh="家"),
    _F("inv_new_cust_share_3m", "invoices", "concentration", "share", "近3个月新客户销售占比",
       "Share of last-3-month sales to customers unseen in the 9 months before",
       ("近3个月", "新客户销售占比"), ("in the last 3 months", "share of sales to new customers"), 0, "z"),
    # --- invoices: quality ---
    _F("inv_void_ratio_3m", "invoices", "invoice_quality", "share", "近3个月作废发票占比",
       "Share of sales invoices voided, last 3 months",
       ("近3个月", "作废发票占比"), ("in the last 3 months", "share of sales invoices voided"), 1, "z"),
    _F("inv_void_ratio_12m", "invoices", "invoice_quality", "share", "近12个月作废发票占比",
       "Share of sales invoices voided, 12 months",
       ("近12个月", "作废发票占比"), ("in the last 12 months", "share of sales invoices voided"), 1, "z"),
    _F("inv_red_ratio_3m", "invoices", "invoice_quality", "share", "近3个月红冲发票金额占比",
       "Red-letter (reversed) share of invoiced sales, last 3 months",
       ("近3个月", "红冲发票金额占比"), ("in the last 3 months", "share of sales reversed by red-letter invoices"),
       1, "z"),
    _F("inv_red_ratio_12m", "invoices", "invoice_quality", "share", "近12个月红冲发票金额占比",
       "Red-letter (reversed) share of invoiced sales, 12 months",
       ("近12个月", "红冲发票金额占比"), ("in the last 12 months", "share of sales reversed by red-letter invoices"),
       1, "z"),
    # --- tax filings ---
    *_windowed("tax_sales", "tax_filings", "sales", "amount", "申报应税销售额", "Taxable sales declared", "log",
               -1, "申报应税销售额", "declared taxable sales"),
    _F("tax_sales_chg_3m", "tax_filings", "sales", "pct_change", "近3期申报销售额环比变化",
       "Change in declared taxable sales, last 3 periods vs prior 3",
       ("近3期", "申报销售额较前3期"), ("in the last 3 periods vs the prior 3", "growth in declared taxable sales"),
       -1, "z"),
    _F("tax_sales_yoy_3m", "tax_filings", "sales", "pct_change", "近3期申报销售额同比变化",
       "Year-on-year change in declared taxable sales, last 3 periods",
       ("近3期", "申报销售额同比"), ("in the last 3 periods, year on year", "growth in declared taxable sales"),
       -1, "z"),
    _F("tax_vat_3m", "tax_filings", "tax_compliance", "amount", "近3期缴纳增值税", "VAT paid, last 3 periods",
       ("近3期", "缴纳增值税"), ("in the last 3 periods", "VAT paid"), -1, "log"),
    _F("tax_vat_12m", "tax_filings", "tax_compliance", "amount", "近12期缴纳增值税", "VAT paid, last 12 periods",
       ("近12期", "缴纳增值税"), ("in the last 12 periods", "VAT paid"), -1, "log"),
    _F("tax_vat_rate_12m", "tax_filings", "tax_compliance", "share", "近12期增值税税负率",
       "VAT paid as a share of taxable sales, 12 periods",
       ("近12期", "增值税税负率"), ("over the last 12 periods", "VAT paid as a share of taxable sales"), 0, "z"),
    _F("tax_late_3m", "tax_filings", "tax_compliance", "count", "近3期逾期申报次数",
       "Late tax filings, last 3 periods",
       ("近3期", "逾期申报"), ("in the last 3 periods", "late tax filings"), 1, "z"),
    _F("tax_late_6m", "tax_filings", "tax_compliance", "count", "近6期逾期申报次数",
       "Late tax filings, last 6 periods",
       ("近6期", "逾期申报"), ("in the last 6 periods", "late tax filings"), 1, "z"),
    _F("tax_late_12m", "tax_filings", "tax_compliance", "count", "近12期逾期申报次数",
       "Late tax filings, last 12 periods",
       ("近12期", "逾期申报"), ("in the last 12 periods", "late tax filings"), 1, "z"),
    _F("tax_missing_3m", "tax_filings", "tax_compliance", "months", "近3期未申报期数",
       "Tax periods without a filing, last 3",
       ("近3期", "未申报的月份有"), ("of the last 3 periods", "tax periods without a return"), 1, "z"),
    _F("tax_missing_12m", "tax_filings", "tax_compliance", "months", "近12期未申报期数",
       "Tax periods without a filing, last 12",
       ("近12期", "未申报的月份有"), ("of the last 12 periods", "tax periods without a return"), 1, "z"),
    _F("tax_months_since_late", "tax_filings", "tax_compliance", "months", "距最近一次逾期申报月数",
       "Months since the last late filing (missing if none in 12 months)",
       ("", "距最近一次逾期申报"), ("ago", "late tax filing"), -1, "z",
       worse_zh="短于", worse_en="More recent"),
    _F("tax_inv_gap_3m", "derived", "tax_compliance", "ratio", "近3期申报销售额与开票金额之比",
       "Declared taxable sales over invoiced sales, last 3 months",
       ("近3期", "申报销售额与开票金额之比"), ("over the last 3 months", "declared taxable sales over invoiced sales"),
       0, "signed_log"),
    # --- headcount (social insurance) ---
    _F("hc_last", "tax_filings", "headcount", "people", "最近一期社保缴纳人数",
       "Employees with social insurance, latest period",
       ("最近一期", "社保缴纳人数"), ("in the latest period", "employees with social insurance"), -1, "log"),
    _F("hc_avg_12m", "tax_filings", "headcount", "people", "近12期平均社保人数",
       "Average employees with social insurance, 12 periods",
       ("近12期", "平均社保人数"), ("on average over the last 12 periods", "insured employees"), -1, "log"),
    _F("hc_chg_3m", "tax_filings", "headcount", "pct_change", "社保人数较3期前变化",
       "Change in insured headcount vs 3 periods earlier",
       ("", "社保缴纳人数较3期前"), ("on 3 periods earlier", "growth in insured headcount"), -1, "z"),
    _F("hc_chg_6m", "tax_filings", "headcount", "pct_change", "社保人数较6期前变化",
       "Change in insured headcount vs 6 periods earlier",
       ("", "社保缴纳人数较6期前"), ("on 6 periods earlier", "growth in insured headcount"), -1, "z"),
    _F("hc_chg_12m", "tax_filings", "headcount", "pct_change", "社保人数同比变化",
       "Year-on-year change in insured headcount",
       ("", "社保缴纳人数同比"), ("year on year", "growth in insured headcount"), -1, "z"),
    _F("hc_sales_per_head_3m", "tax_filings", "headcount", "amount", "近3期人均申报销售额",
       "Declared sales per insured employee, last 3 periods",
       ("近3期", "人均申报销售额"), ("over the last 3 periods", "declared sales per insured employee"), -1, "log"),
    # --- power (utility bills) ---
    *_windowed("pwr_kwh", "utility_bills", "power", "kwh", "用电量", "Electricity used", "log", -1,
               "用电量", "electricity use"),
    _F("pwr_yoy_1m", "utility_bills", "power", "pct_change", "最近一期用电量同比变化",
       "Year-on-year change in electricity use, latest period",
       ("最近一期", "用电量同比"), ("in the latest period, year on year", "growth in electricity use"), -1, "z"),
    _F("pwr_yoy_3m", "utility_bills", "power", "pct_change", "近3期用电量同比变化",
       "Year-on-year change in electricity use, last 3 periods",
       ("近3期", "用电量同比"), ("in the last 3 periods, year on year", "growth in electricity use"), -1, "z"),
    _F("pwr_chg_3m", "utility_bills", "power", "pct_change", "近3期用电量环比变化",
       "Change in electricity use, last 3 periods vs prior 3",
       ("近3期", "用电量较前3期"), ("in the last 3 periods vs the prior 3", "growth in electricity use"), -1, "z"),
    _F("pwr_vol_12m", "utility_bills", "power", "ratio", "近12期用电量波动系数",
       "Volatility (coefficient of variation) of monthly electricity use, 12 periods",
       ("近12期", "用电量波动系数"), ("over the last 12 periods", "volatility of monthly electricity use"), 1, "z"),
    _F("pwr_slope_12m", "utility_bills", "power", "slope", "近12期用电量趋势",
       "Trend of monthly electricity use over 12 periods (log-scale slope per month)",
       ("近12期", "用电量趋势"), ("over the last 12 periods", "trend in electricity use"), -1, "z"),
    _F("pwr_bill_3m", "utility_bills", "power", "amount", "近3期电费", "Electricity billed, last 3 periods",
       ("近3期", "电费"), ("in the last 3 periods", "electricity bills"), -1, "log"),
    _F("pwr_bill_12m", "utility_bills", "power", "amount", "近12期电费", "Electricity billed, last 12 periods",
       ("近12期", "电费"), ("in the last 12 periods", "electricity bills"), -1, "log"),
    _F("pwr_overdue_max_3m", "utility_bills", "power", "days", "近3期电费最长逾期天数",
       "Longest electricity bill delay, last 3 periods",
       ("近3期", "电费最长逾期"), ("at most in the last 3 periods", "delays paying electricity bills"), 1, "z"),
    _F("pwr_overdue_max_12m", "utility_bills", "power", "days", "近12期电费最长逾期天数",
       "Longest electricity bill delay, last 12 periods",
       ("近12期", "电费最长逾期"), ("at most in the last 12 periods", "delays paying electricity bills"), 1, "z"),
    _F("pwr_overdue_cnt_12m", "utility_bills", "power", "count", "近12期电费逾期次数",
       "Electricity bills paid late, last 12 periods",
       ("近12期", "电费逾期"), ("in the last 12 periods", "electricity bills paid late"), 1, "z"),
    _F("pwr_missing_12m", "utility_bills", "power", "months", "近12期无电费账单期数",
       "Periods without an electricity bill, last 12",
       ("近12期", "无电费账单的月份有"), ("of the last 12 periods", "periods without an electricity bill"), 1, "z"),
    _F("pwr_kwh_per_head_3m", "derived", "power", "kwh", "近3期人均用电量",
       "Electricity used per insured employee, last 3 periods",
       ("近3期", "人均用电量"), ("over the last 3 periods", "electricity used per insured employee"), 0, "log"),
    # --- registry events ---
    _F("reg_rep_chg_12m", "registry_events", "governance", "count", "近12个月法定代表人变更次数",
       "Legal-representative changes, last 12 months",
       ("近12个月", "法定代表人变更"), ("in the last 12 months", "legal-representative changes"), 1, "z"),
    _F("reg_rep_chg_36m", "registry_events", "governance", "count", "近36个月法定代表人变更次数",
       "Legal-representative changes, last 36 months",
       ("近36个月", "法定代表人变更"), ("in the last 36 months", "legal-representative changes"), 1, "z"),
    _F("reg_addr_chg_12m", "registry_events", "governance", "count", "近12个月地址变更次数",
       "Address changes, last 12 months",
       ("近12个月", "注册地址变更"), ("in the last 12 months", "registered-address changes"), 1, "z"),
    _F("reg_cap_chg_12m", "registry_events", "governance", "count", "近12个月注册资本变更次数",
       "Registered-capital changes, last 12 months",
       ("近12个月", "注册资本变更"), ("in the last 12 months", "registered-capital changes"), 0, "z"),
    _F("reg_cap_cut_12m", "registry_events", "governance", "amount", "近12个月注册资本减少额",
       "Registered capital withdrawn, last 12 months",
       ("近12个月", "注册资本减少"), ("in the last 12 months", "registered capital withdrawn"), 1, "log",
       worse_zh="多于", worse_en="More"),
    _F("reg_months_since_event", "registry_events", "governance", "months", "距最近一次登记变更月数",
       "Months since the latest registry event (missing if none)",
       ("", "距最近一次登记变更"), ("ago", "registry change"), -1, "z",
       worse_zh="短于", worse_en="More recent"),
    _F("reg_penalty_12m", "registry_events", "litigation", "count", "近12个月行政处罚次数",
       "Administrative penalties, last 12 months",
       ("近12个月", "受到行政处罚"), ("in the last 12 months", "administrative penalties"), 1, "z"),
    _F("reg_penalty_36m", "registry_events", "litigation", "count", "近36个月行政处罚次数",
       "Administrative penalties, last 36 months",
       ("近36个月", "受到行政处罚"), ("in the last 36 months", "administrative penalties"), 1, "z"),
    _F("reg_litig_3m", "registry_events", "litigation", "count", "近3个月涉诉次数",
       "Lawsuits against the firm, last 3 months",
       ("近3个月", "涉诉"), ("in the last 3 months", "lawsuits against the firm"), 1, "z"),
    _F("reg_litig_12m", "registry_events", "litigation", "count", "近12个月涉诉次数",
       "Lawsuits against the firm, last 12 months",
       ("近12个月", "涉诉"), ("in the last 12 months", "lawsuits against the firm"), 1, "z"),
    _F("reg_litig_36m", "registry_events", "litigation", "count", "近36个月涉诉次数",
       "Lawsuits against the firm, last 36 months",
       ("近36个月", "涉诉"), ("in the last 36 months", "lawsuits against the firm"), 1, "z"),
    _F("reg_litig_amt_12m", "registry_events", "litigation", "amount", "近12个月涉诉金额",
       "Amount claimed in lawsuits, last 12 months",
       ("近12个月", "涉诉金额"), ("in the last 12 months", "amounts claimed in lawsuits"), 1, "log"),
    # --- related parties (shared controller) ---
    _F("rel_n_related", "enterprises", "related_party", "number", "关联企业数",
       "Other firms under the same controller",
       ("", "同一实际控制人下关联企业"), ("", "related firms under the same controller"), 0, "z", unit_zh="家"),
    _F("rel_arrears_firms_12m", "loans", "related_party", "number", "近12个月逾期关联企业数",
       "Related firms with loans past due in the last 12 months",
       ("近12个月", "贷款逾期的关联企业"), ("in the last 12 months", "related firms with loans past due"),
       1, "z", unit_zh="家"),
    _F("rel_max_dpd_12m", "loans", "related_party", "days", "近12个月关联企业最长逾期天数",
       "Longest days past due among related firms, 12 months (capped at 180)",
       ("近12个月", "关联企业贷款最长逾期"), ("past due at most in the last 12 months", "arrears at related firms"),
       1, "z"),
    _F("rel_default_firms_12m", "loans", "related_party", "number", "近12个月违约关联企业数",
       "Related firms 90+ days past due in the last 12 months",
       ("近12个月", "违约的关联企业"), ("in the last 12 months", "related firms in default"), 1, "z", unit_zh="家"),
    _F("rel_late_tax_share_12m", "tax_filings", "related_party", "share", "近12期关联企业逾期申报占比",
       "Share of related firms' tax returns filed late, 12 periods",
       ("近12期", "关联企业逾期申报占比"), ("over the last 12 periods", "share of related firms' tax returns filed late"),
       1, "z"),
    _F("rel_litig_12m", "registry_events", "related_party", "count", "近12个月关联企业涉诉次数",
       "Lawsuits against related firms, last 12 months",
       ("近12个月", "关联企业涉诉"), ("in the last 12 months", "lawsuits against related firms"), 1, "z"),
    # --- firmographics ---
    _F("ent_industry", "enterprises", "firmographic", "category", "行业门类（GB/T 4754）",
       "Industry section (GB/T 4754)", ("", "所属行业"), ("", "industry"), 0, "vocab"),
    _F("ent_province", "enterprises", "firmographic", "category", "注册省份", "Province of registration",
       ("", "注册地"), ("", "province of registration"), 0, "vocab"),
    _F("ent_legal_form", "enterprises", "firmographic", "category", "企业类型", "Legal form",
       ("", "企业类型"), ("", "legal form"), 0, "vocab"),
    _F("ent_reg_capital", "enterprises", "firmographic", "amount", "注册资本", "Registered capital",
       ("", "注册资本"), ("", "registered capital"), -1, "log"),
    _F("ent_age_years", "enterprises", "firmographic", "years", "企业成立年限",
       "Years since establishment (capped at 30)",
       ("", "企业成立"), ("since establishment", ""), -1, "log", worse_zh="短于", worse_en="Younger"),
    _F("ent_rep_age", "enterprises", "firmographic", "age", "法定代表人年龄", "Legal representative's age",
       ("", "法定代表人年龄"), ("", "legal representative's age"), 0, "z"),
    # --- data history ---
    _F("hist_months", "derived", "history", "months", "可用数据月数",
       "Months of feed history available, up to 12",
       ("", "可用经营数据"), ("of data", "trading history"), -1, "z", worse_en="Shorter"),
    _F("hist_inv_months_12m", "invoices", "history", "months", "近12个月有开票的月数",
       "Months with any invoice (sales or purchases) in the last 12",
       ("近12个月", "有开票的月份有"), ("of the last 12", "months with invoices"), -1, "z"),
    # --- the firm's own loan performance (appended: reason codes are positional, keep them stable)
    _F("loan_dpd_now", "loans", "arrears", "days", "当前贷款逾期天数",
       "Days past due on the firm's loans at the latest month-end",
       ("当前", "贷款逾期"), ("past due at the latest month-end", "loan arrears"), 1, "z"),
    _F("loan_max_dpd_12m", "loans", "arrears", "days", "近12个月贷款最长逾期天数",
       "Longest days past due on the firm's loans, last 12 months",
       ("近12个月", "贷款最长逾期"), ("past due at most in the last 12 months", "loan arrears"), 1, "z"),
    _F("loan_arrears_months_12m", "loans", "arrears", "months", "近12个月贷款逾期月数",
       "Month-ends with loans past due, last 12 months",
       ("近12个月", "贷款逾期的月份有"), ("of the last 12", "months with loans past due"), 1, "z"),
])

# Inputs that would otherwise grow with the calendar or with how long the feeds have been
# collected, capped where the training snapshots (12 months of history and up) still see every
# value: feed history (the nightly book would see 36 months, training 12-24), a firm's age (the
# book ages a year between training and scoring) and related firms' days past due (a defaulted
# loan adds 30 days a month for ever). Beyond these values risk no longer changes anyway.
CAPS: dict[str, float] = {"hist_months": 12.0, "ent_age_years": 30.0, "rel_max_dpd_12m": 180.0}

# Changes read against the book (transforms/book_relative.py): every firm's change less the
# median change of the whole book at the same date, so that seasons, the Spring Festival's date and
# the economy, which move every firm at once, do not read as the firm's own risk.
BOOK_RELATIVE: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind in ("pct_change", "slope"))
_VS_BOOK_ZH, _VS_BOOK_EN = "（相对全部企业同期中位数）", ", against the book's median at the date"

for _i, _f in enumerate(FEATURES):
    object.__setattr__(_f, "code", f"R{_i + 1:03d}")
    object.__setattr__(_f, "cap", CAPS.get(_f.name))
    if _f.name in BOOK_RELATIVE:
        object.__setattr__(_f, "book_relative", True)
        object.__setattr__(_f, "desc_zh", _f.desc_zh + _VS_BOOK_ZH)
        object.__setattr__(_f, "desc_en", _f.desc_en + _VS_BOOK_EN)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
NUMERIC: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.is_categorical)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_categorical)

# Columns beside the features in every feature row (not model inputs).
KEY_COLUMNS = ("enterprise_id", "as_of_date")
META_COLUMNS = ("in_default", "months_history", "label_default_12m")


# ---------- category names ----------
# Every value the feed contract allows (transforms.feeds) in Chinese and English; a value outside
# it renders as it came. GB/T 4754-2017 section names, with the letter kept.
_SECTIONS = {
    "A": ("农、林、牧、渔业", "agriculture, forestry and fishing"), "B": ("采矿业", "mining"),
    "C": ("制造业", "manufacturing"),
    "D": ("电力、热力、燃气及水生产和供应业", "electricity, heat, gas and water supply"),
    "E": ("建筑业", "construction"), "F": ("批发和零售业", "wholesale and retail"),
    "G": ("交通运输、仓储和邮政业", "transport, storage and post"),
    "H": ("住宿和餐饮业", "accommodation and catering"),
    "I": ("信息传输、软件和信息技术服务业", "information technology services"),
    "J": ("金融业", "finance"), "K": ("房地产业", "real estate"),
    "L": ("租赁和商务服务业", "leasing and business services"),
    "M": ("科学研究和技术服务业", "research and technical services"),
    "N": ("水利、环境和公共设施管理业", "water, environment and public facilities"),
    "O": ("居民服务、修理和其他服务业", "household, repair and other services"),
    "P": ("教育", "education"), "Q": ("卫生和社会工作", "health and social work"),
    "R": ("文化、体育和娱乐业", "culture, sports and entertainment"),
    "S": ("公共管理、社会保障和社会组织", "public administration and social organisations"),
    "T": ("国际组织", "international organisations"),
}
_PROVINCES = {
    "Beijing": "北京", "Tianjin": "天津", "Hebei": "河北", "Shanxi": "山西", "InnerMongolia": "内蒙古",
    "Liaoning": "辽宁", "Jilin": "吉林", "Heilongjiang": "黑龙江", "Shanghai": "上海", "Jiangsu": "江苏",
    "Zhejiang": "浙江", "Anhui": "安徽", "Fujian": "福建", "Jiangxi": "江西", "Shandong": "山东",
    "Henan": "河南", "Hubei": "湖北", "Hunan": "湖南", "Guangdong": "广东", "Guangxi": "广西",
    "Hainan": "海南", "Chongqing": "重庆", "Sichuan": "四川", "Guizhou": "贵州", "Yunnan": "云南",
    "Tibet": "西藏", "Shaanxi": "陕西", "Gansu": "甘肃", "Qinghai": "青海", "Ningxia": "宁夏",
    "Xinjiang": "新疆",
}
_LEGAL_FORMS = {
    "limited_company": ("有限责任公司", "limited company"),
    "sole_proprietorship": ("个人独资企业", "sole proprietorship"),
    "partnership": ("合伙企业", "partnership"),
    "individual_business": ("个体工商户", "individual business"),
}
CATEGORY_NAMES: dict[str, dict[str, tuple[str, str]]] = {
    "ent_industry": {k: (f"{zh}（{k}）", f"{en}, section {k}") for k, (zh, en) in _SECTIONS.items()},
    "ent_province": {k: (zh, "Inner Mongolia" if k == "InnerMongolia" else k)
                     for k, zh in _PROVINCES.items()},
    "ent_legal_form": _LEGAL_FORMS,
}


# ---------- rendering a value inside a sentence ----------
def _num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _amount_zh(x: float) -> str:
    if abs(x) >= 1e8:
        return f"{x / 1e8:.2f}亿元"
    if abs(x) >= 1e4:
        return f"{x / 1e4:.1f}万元"
    return f"{x:.0f}元"


def _percent(pct: float) -> str:
    """Whole percent, one decimal below 10% so 0.4% and 1.2% do not both read '1%'."""
    return f"{pct:.0f}%" if abs(pct) >= 10 or pct == round(pct) else f"{pct:.1f}%"


def render_value(feature: Feature, value, lang: str) -> str:
    """A value (the firm's or the typical firm's) as it reads in a reason sentence, 'zh' or 'en'."""
    zh = lang == "zh"
    if is_missing(value):
        return "无数据" if zh else "no data"
    k = feature.kind
    if k == "category":
        names = CATEGORY_NAMES.get(feature.name, {}).get(str(value))
        return str(value) if names is None else names[0 if zh else 1]
    v = float(value)
    if feature.book_relative:
        return _gap_to_book(k, v, zh)
    if k == "pct_change":
        pct = round(abs(v) * 100)
        if pct == 0:
            return "基本持平" if zh else "flat"
        if zh:
            return f"{'下降' if v < 0 else '增长'}{pct}%"
        return f"{'down' if v < 0 else 'up'} {pct}%"
    if k == "share":
        return _percent(v * 100)
    if k == "amount":
        return _amount_zh(v) if zh else f"CNY {_num(v)}"
    if k == "kwh":
        return f"{_num(v)}千瓦时" if zh else f"{_num(v)} kWh"
    if k == "count":  # events
        return f"{round(v)}次" if zh else str(round(v))
    if k == "number":  # things: invoices, customers, firms
        return f"{round(v)}{feature.unit_zh or '个'}" if zh else str(round(v))
    if k == "months":
        n = int(round(v))
        return f"{n}个月" if zh else f"{n} month{'s' if n != 1 else ''}"
    if k == "days":
        n = round(v)
        return f"{n}天" if zh else f"{n} day{'s' if n != 1 else ''}"
    if k == "age":
        return f"{v:.0f}岁" if zh else f"{v:.0f}"
    if k == "people":
        return f"{v:.0f}人" if zh else f"{v:.0f}"
    if k == "years":
        return f"{v:.1f}年" if zh else f"{v:.1f} year{'s' if round(v, 1) != 1 else ''}"
    if k == "slope":
        pct = (math.exp(v) - 1) * 100
        return f"月均{pct:+.1f}%" if zh else f"{pct:+.1f}% a month"
    return f"{v:.2f}"


def _gap_to_book(kind: str, v: float, zh: bool) -> str:
    """A change read against the book's median change (transforms/book_relative.py): how much
    higher or lower than the book's, in percent (a trend: percent a month)."""
    pct = abs((math.exp(v) - 1) * 100 if kind == "slope" else v * 100)
    shown = _percent(pct)
    if shown in ("0%", "0.0%"):
        return "与全部企业中位数持平" if zh else "level with the book's median"
    per_month_zh, per_month_en = ("月均", " a month") if kind == "slope" else ("", "")
    if zh:
        return f"{per_month_zh}{'低于' if v < 0 else '高于'}全部企业中位数{shown}"
    return f"{shown}{per_month_en} {'below' if v < 0 else 'above'} the book's median"


def is_missing(value) -> bool:
    if value is None or value == "":
        return True
    if type(value) is float:         # the common case, without the numbers.Real ABC check (slow)
        return math.isnan(value)
    return isinstance(value, numbers.Real) and math.isnan(value)


# The comparative of each kind's risky side: (lower en, higher en, lower zh, higher zh).
_WORSE = {
    **dict.fromkeys(("count", "number", "months", "people"), ("Fewer", "More", "少于", "多于")),
    "days": ("Shorter", "Longer", "短于", "长于"),
    **dict.fromkeys(("pct_change", "slope"), ("Weaker", "Stronger", "低于", "高于")),
    **dict.fromkeys(("amount", "kwh", "share", "ratio", "age", "years"), ("Lower", "Higher", "低于", "高于")),
}


def typical_clause(feature: Feature, typical, lang: str, value=None) -> str:
    """How a sentence names the typical value: the training median, or the most frequent category
    ('also' when the firm's category is that one)."""
    also = feature.is_categorical and value is not None and str(value) == str(typical)
    return _typical_clause(feature.name, typical, lang, also)


@functools.lru_cache(maxsize=4096)
def _typical_clause(name: str, typical, lang: str, also: bool) -> str:
    # one model's typical values are a few hundred (feature, language) pairs; the nightly job
    # writes them into millions of reasons (keyed by name: a Feature hashes all its fields)
    feature = BY_NAME[name]
    t = render_value(feature, typical, lang)
    if feature.is_categorical:
        if lang == "zh":
            return f"，多数企业{'亦' if also else ''}为{t}"
        return f" (most firms: {'also ' if also else ''}{t})"
    return f"（中位数{t}）" if lang == "zh" else f" (typical: {t})"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def reason_text(feature: Feature, value, typical, worse: bool) -> tuple[str, str]:
    """(zh, en) sentences stating the firm's value beside the typical firm's (`typical`: the
    training median, or the most frequent category). `worse` (decided by models.reasons: the value
    is on the risky side of a directional feature's median) says so: 'Fewer sales invoices than
    most firms: 12 in the last 12 months (typical: 80)' / '近12个月销项发票12张，少于多数企业（中位数
    80张）'; otherwise the two values stand side by side."""
    if is_missing(value):
        return f"{feature.desc_zh}：无数据", f"{feature.desc_en}: no data"
    v_zh, v_en = render_value(feature, value, "zh"), render_value(feature, value, "en")
    t_zh, t_en = (typical_clause(feature, typical, lang, value) for lang in ("zh", "en"))
    period_en = f" {feature.period_en}" if feature.period_en else ""
    if worse:
        lower_en, higher_en, lower_zh, higher_zh = _WORSE[feature.kind]
        higher = feature.risk_direction > 0
        worse_zh = feature.worse_zh or (higher_zh if higher else lower_zh)
        worse_en = feature.worse_en or (higher_en if higher else lower_en)
        said_en = " ".join(w for w in (worse_en, feature.subject_en) if w)
        return (f"{feature.period_zh}{feature.subject_zh}{v_zh}，{worse_zh}多数企业{t_zh}",
                f"{said_en} than most firms: {v_en}{period_en}{t_en}")
    is_ = "" if feature.kind == "count" else "为"     # '变更3次', not '变更为3次' (changed to 3)
    return (f"{feature.period_zh}{feature.subject_zh}{is_}{v_zh}{t_zh}",
            f"{_capitalised(feature.subject_en or feature.desc_en)}: {v_en}{period_en}{t_en}")
