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
import math
import numbers

# Risk families: what a reason is about. Generator drivers map onto these (feeds.DRIVER_FAMILY).
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
    reason_zh: str          # sentence template; {value} is the firm's value rendered for its kind
    reason_en: str
    risk_direction: int     # +1: higher is riskier, -1: lower is riskier, 0: not monotone / unknown
    transform: str          # TFT treatment: 'log' (heavy-tailed, >= 0), 'z', 'signed_log', 'vocab'
    cap: float | None = None  # values above it count as it (see CAPS below)
    code: str = ""          # stable reason code, filled in below

    @property
    def dtype(self) -> str:
        return "string" if self.transform == "vocab" else "float32"

    @property
    def is_categorical(self) -> bool:
        return self.transform == "vocab"


_F = Feature
_WIN_ZH = {1: "近1个月", 3: "近3个月", 6: "近6个月", 12: "近12个月", 36: "近36个月"}
_WIN_EN = {1: "in the last month", 3: "in the last 3 months", 6: "in the last 6 months",
           12: "in the last 12 months", 36: "in the last 36 months"}


def _windowed(prefix, feed, family, kind, zh, en, transform, direction, windows=(1, 3, 6, 12)):
    """One feature per window: '{prefix}_{w}m' with the window named in both languages."""
    out = []
    for w in windows:
        out.append(_F(
            f"{prefix}_{w}m", feed, family, kind,
            f"{_WIN_ZH[w]}{zh}", f"{en} {_WIN_EN[w]}",
            f"{_WIN_ZH[w]}{zh}为{{value}}", f"{en} {_WIN_EN[w]}: {{value}}",
            direction, transform))
    return out


FEATURES: tuple[Feature, ...] = tuple([
    # --- invoices: sales ---
    *_windowed("inv_sales_amt", "invoices", "sales", "amount", "开票销售额", "Invoiced sales", "log", -1),
    *_windowed("inv_sales_cnt", "invoices", "sales", "number", "销项发票张数", "Sales invoices issued", "log", -1),
    _F("inv_sales_chg_3m", "invoices", "sales", "pct_change", "近3个月开票金额环比变化",
       "Change in invoiced sales, last 3 months vs prior 3",
       "近3个月开票金额较前3个月{value}", "Invoiced sales in the last 3 months {value} on the prior 3 months", -1, "z"),
    _F("inv_sales_chg_6m", "invoices", "sales", "pct_change", "近6个月开票金额较前6个月变化",
       "Change in invoiced sales, last 6 months vs prior 6",
       "近6个月开票金额较前6个月{value}", "Invoiced sales in the last 6 months {value} on the prior 6 months", -1, "z"),
    _F("inv_sales_chg_1m", "invoices", "sales", "pct_change", "上月开票金额较前3个月月均变化",
       "Change in last month's invoiced sales vs the prior 3-month average",
       "上月开票金额较前3个月月均{value}", "Invoiced sales last month {value} on the prior 3-month average", -1, "z"),
    _F("inv_sales_yoy_3m", "invoices", "sales", "pct_change", "近3个月开票金额同比变化",
       "Year-on-year change in invoiced sales, last 3 months",
       "近3个月开票金额同比{value}", "Invoiced sales in the last 3 months {value} year on year", -1, "z"),
    _F("inv_sales_vol_12m", "invoices", "sales", "ratio", "近12个月月度开票金额波动系数",
       "Volatility (coefficient of variation) of monthly invoiced sales, 12 months",
       "近12个月月度开票金额波动系数为{value}", "Monthly invoiced sales volatility over 12 months is {value}", 1, "z"),
    _F("inv_sales_slope_12m", "invoices", "sales", "slope", "近12个月开票金额趋势",
       "Trend of monthly invoiced sales over 12 months (log-scale slope per month)",
       "近12个月开票金额月均趋势为{value}", "Invoiced sales trend over 12 months: {value} per month", -1, "z"),
    _F("inv_months_no_sales_12m", "invoices", "sales", "months", "近12个月无开票月数",
       "Months without sales invoices in the last 12",
       "近12个月有{value}无开票", "{value} without any sales invoice in the last 12 months", 1, "z"),
    _F("inv_avg_ticket_3m", "invoices", "sales", "amount", "近3个月平均单张开票金额",
       "Average sales invoice amount, last 3 months",
       "近3个月平均单张开票金额为{value}", "Average sales invoice in the last 3 months: {value}", 0, "log"),
    # --- invoices: purchases ---
    *_windowed("inv_purch_amt", "invoices", "purchases", "amount", "进项采购额", "Purchases invoiced", "log", -1),
    _F("inv_purch_chg_3m", "invoices", "purchases", "pct_change", "近3个月进项金额环比变化",
       "Change in purchases, last 3 months vs prior 3",
       "近3个月进项金额较前3个月{value}", "Purchases in the last 3 months {value} on the prior 3 months", -1, "z"),
    _F("inv_purch_sales_ratio_3m", "invoices", "purchases", "ratio", "近3个月进销比",
       "Purchases to sales ratio, last 3 months",
       "近3个月进项与销项金额之比为{value}", "Purchases to sales ratio in the last 3 months: {value}", 1, "log"),
    _F("inv_n_suppliers_12m", "invoices", "purchases", "number", "近12个月供应商数",
       "Distinct suppliers in the last 12 months",
       "近12个月供应商数为{value}", "Distinct suppliers in the last 12 months: {value}", -1, "log"),
    # --- invoices: customer concentration ---
    _F("inv_top1_share_12m", "invoices", "concentration", "share", "近12个月第一大客户销售占比",
       "Share of sales to the largest customer, 12 months",
       "近12个月第一大客户销售占比{value}", "The largest customer took {value} of sales in the last 12 months", 1, "z"),
    _F("inv_hhi_12m", "invoices", "concentration", "ratio", "近12个月客户集中度(HHI)",
       "Customer concentration (Herfindahl index), 12 months",
       "近12个月客户集中度指数为{value}", "Customer concentration index over 12 months: {value}", 1, "z"),
    _F("inv_n_customers_12m", "invoices", "concentration", "number", "近12个月客户数",
       "Distinct customers in the last 12 months",
       "近12个月客户数为{value}", "Distinct customers in the last 12 months: {value}", -1, "log"),
    _F("inv_new_cust_share_3m", "invoices", "concentration", "share", "近3个月新客户销售占比",
       "Share of last-3-month sales to customers unseen in the 9 months before",
       "近3个月新客户销售占比{value}", "New customers took {value} of sales in the last 3 months", 0, "z"),
    # --- invoices: quality ---
    _F("inv_void_ratio_3m", "invoices", "invoice_quality", "share", "近3个月作废发票占比",
       "Share of sales invoices voided, last 3 months",
       "近3个月作废发票占比{value}", "{value} of sales invoices voided in the last 3 months", 1, "z"),
    _F("inv_void_ratio_12m", "invoices", "invoice_quality", "share", "近12个月作废发票占比",
       "Share of sales invoices voided, 12 months",
       "近12个月作废发票占比{value}", "{value} of sales invoices voided in the last 12 months", 1, "z"),
    _F("inv_red_ratio_3m", "invoices", "invoice_quality", "share", "近3个月红冲发票金额占比",
       "Red-letter (reversed) share of invoiced sales, last 3 months",
       "近3个月红冲发票金额占比{value}", "{value} of invoiced sales reversed by red-letter invoices in the last 3 months", 1, "z"),
    _F("inv_red_ratio_12m", "invoices", "invoice_quality", "share", "近12个月红冲发票金额占比",
       "Red-letter (reversed) share of invoiced sales, 12 months",
       "近12个月红冲发票金额占比{value}", "{value} of invoiced sales reversed by red-letter invoices in the last 12 months", 1, "z"),
    # --- tax filings ---
    *_windowed("tax_sales", "tax_filings", "sales", "amount", "申报应税销售额", "Taxable sales declared", "log", -1),
    _F("tax_sales_chg_3m", "tax_filings", "sales", "pct_change", "近3期申报销售额环比变化",
       "Change in declared taxable sales, last 3 periods vs prior 3",
       "近3期申报销售额较前3期{value}", "Declared taxable sales in the last 3 periods {value} on the prior 3", -1, "z"),
    _F("tax_sales_yoy_3m", "tax_filings", "sales", "pct_change", "近3期申报销售额同比变化",
       "Year-on-year change in declared taxable sales, last 3 periods",
       "近3期申报销售额同比{value}", "Declared taxable sales in the last 3 periods {value} year on year", -1, "z"),
    _F("tax_vat_3m", "tax_filings", "tax_compliance", "amount", "近3期缴纳增值税",
       "VAT paid, last 3 periods", "近3期缴纳增值税{value}", "VAT paid in the last 3 periods: {value}", -1, "log"),
    _F("tax_vat_12m", "tax_filings", "tax_compliance", "amount", "近12期缴纳增值税",
       "VAT paid, last 12 periods", "近12期缴纳增值税{value}", "VAT paid in the last 12 periods: {value}", -1, "log"),
    _F("tax_vat_rate_12m", "tax_filings", "tax_compliance", "share", "近12期增值税税负率",
       "VAT paid as a share of taxable sales, 12 periods",
       "近12期增值税税负率为{value}", "VAT burden over 12 periods: {value} of taxable sales", 0, "z"),
    _F("tax_late_3m", "tax_filings", "tax_compliance", "count", "近3期逾期申报次数",
       "Late tax filings, last 3 periods", "近3期逾期申报{value}", "Tax returns filed late in the last 3 periods: {value}", 1, "z"),
    _F("tax_late_6m", "tax_filings", "tax_compliance", "count", "近6期逾期申报次数",
       "Late tax filings, last 6 periods", "近6期逾期申报{value}", "Tax returns filed late in the last 6 periods: {value}", 1, "z"),
    _F("tax_late_12m", "tax_filings", "tax_compliance", "count", "近12期逾期申报次数",
       "Late tax filings, last 12 periods", "近12期逾期申报{value}", "Tax returns filed late in the last 12 periods: {value}", 1, "z"),
    _F("tax_missing_3m", "tax_filings", "tax_compliance", "months", "近3期未申报期数",
       "Tax periods without a filing, last 3", "近3期有{value}未申报", "{value} without a tax return in the last 3 periods", 1, "z"),
    _F("tax_missing_12m", "tax_filings", "tax_compliance", "months", "近12期未申报期数",
       "Tax periods without a filing, last 12", "近12期有{value}未申报", "{value} without a tax return in the last 12 periods", 1, "z"),
    _F("tax_months_since_late", "tax_filings", "tax_compliance", "months", "距最近一次逾期申报月数",
       "Months since the last late filing (missing if none in 12 months)",
       "距最近一次逾期申报仅{value}", "Last late tax filing only {value} ago", -1, "z"),
    _F("tax_inv_gap_3m", "derived", "tax_compliance", "ratio", "近3期申报销售额与开票金额之比",
       "Declared taxable sales over invoiced sales, last 3 months",
       "近3期申报销售额为开票金额的{value}倍", "Declared taxable sales are {value} times invoiced sales over 3 months", 0, "signed_log"),
    # --- headcount (social insurance) ---
    _F("hc_last", "tax_filings", "headcount", "people", "最近一期社保缴纳人数",
       "Employees with social insurance, latest period",
       "最近一期社保缴纳人数为{value}", "Employees with social insurance in the latest period: {value}", -1, "log"),
    _F("hc_avg_12m", "tax_filings", "headcount", "people", "近12期平均社保人数",
       "Average employees with social insurance, 12 periods",
       "近12期平均社保人数为{value}", "Average insured employees over 12 periods: {value}", -1, "log"),
    _F("hc_chg_3m", "tax_filings", "headcount", "pct_change", "社保人数较3期前变化",
       "Change in insured headcount vs 3 periods earlier",
       "社保缴纳人数较3期前{value}", "Insured headcount {value} on 3 periods earlier", -1, "z"),
    _F("hc_chg_6m", "tax_filings", "headcount", "pct_change", "社保人数较6期前变化",
       "Change in insured headcount vs 6 periods earlier",
       "社保缴纳人数较6期前{value}", "Insured headcount {value} on 6 periods earlier", -1, "z"),
    _F("hc_chg_12m", "tax_filings", "headcount", "pct_change", "社保人数同比变化",
       "Year-on-year change in insured headcount",
       "社保缴纳人数同比{value}", "Insured headcount {value} year on year", -1, "z"),
    _F("hc_sales_per_head_3m", "tax_filings", "headcount", "amount", "近3期人均申报销售额",
       "Declared sales per insured employee, last 3 periods",
       "近3期人均申报销售额为{value}", "Declared sales per insured employee over 3 periods: {value}", -1, "log"),
    # --- power (utility bills) ---
    *_windowed("pwr_kwh", "utility_bills", "power", "kwh", "用电量", "Electricity used", "log", -1),
    _F("pwr_yoy_1m", "utility_bills", "power", "pct_change", "最近一期用电量同比变化",
       "Year-on-year change in electricity use, latest period",
       "最近一期用电量同比{value}", "Electricity use in the latest period {value} year on year", -1, "z"),
    _F("pwr_yoy_3m", "utility_bills", "power", "pct_change", "近3期用电量同比变化",
       "Year-on-year change in electricity use, last 3 periods",
       "近3期用电量同比{value}", "Electricity use in the last 3 periods {value} year on year", -1, "z"),
    _F("pwr_chg_3m", "utility_bills", "power", "pct_change", "近3期用电量环比变化",
       "Change in electricity use, last 3 periods vs prior 3",
       "近3期用电量较前3期{value}", "Electricity use in the last 3 periods {value} on the prior 3", -1, "z"),
    _F("pwr_vol_12m", "utility_bills", "power", "ratio", "近12期用电量波动系数",
       "Volatility (coefficient of variation) of monthly electricity use, 12 periods",
       "近12期用电量波动系数为{value}", "Electricity use volatility over 12 periods: {value}", 1, "z"),
    _F("pwr_slope_12m", "utility_bills", "power", "slope", "近12期用电量趋势",
       "Trend of monthly electricity use over 12 periods (log-scale slope per month)",
       "近12期用电量月均趋势为{value}", "Electricity use trend over 12 periods: {value} per month", -1, "z"),
    _F("pwr_bill_3m", "utility_bills", "power", "amount", "近3期电费", "Electricity billed, last 3 periods",
       "近3期电费为{value}", "Electricity billed in the last 3 periods: {value}", -1, "log"),
    _F("pwr_bill_12m", "utility_bills", "power", "amount", "近12期电费", "Electricity billed, last 12 periods",
       "近12期电费为{value}", "Electricity billed in the last 12 periods: {value}", -1, "log"),
    _F("pwr_overdue_max_3m", "utility_bills", "power", "days", "近3期电费最长逾期天数",
       "Longest electricity bill delay, last 3 periods",
       "近3期电费最长逾期{value}", "Electricity bill paid up to {value} late in the last 3 periods", 1, "z"),
    _F("pwr_overdue_max_12m", "utility_bills", "power", "days", "近12期电费最长逾期天数",
       "Longest electricity bill delay, last 12 periods",
       "近12期电费最长逾期{value}", "Electricity bill paid up to {value} late in the last 12 periods", 1, "z"),
    _F("pwr_overdue_cnt_12m", "utility_bills", "power", "count", "近12期电费逾期次数",
       "Electricity bills paid late, last 12 periods",
       "近12期电费逾期{value}", "Electricity bills paid late in the last 12 periods: {value}", 1, "z"),
    _F("pwr_missing_12m", "utility_bills", "power", "months", "近12期无电费账单期数",
       "Periods without an electricity bill, last 12",
       "近12期有{value}无电费账单", "{value} without an electricity bill in the last 12 periods", 1, "z"),
    _F("pwr_kwh_per_head_3m", "derived", "power", "kwh", "近3期人均用电量",
       "Electricity used per insured employee, last 3 periods",
       "近3期人均用电量为{value}", "Electricity per insured employee over 3 periods: {value}", 0, "log"),
    # --- registry events ---
    _F("reg_rep_chg_12m", "registry_events", "governance", "count", "近12个月法定代表人变更次数",
       "Legal-representative changes, last 12 months",
       "近12个月法定代表人变更{value}", "Legal-representative changes in the last 12 months: {value}", 1, "z"),
    _F("reg_rep_chg_36m", "registry_events", "governance", "count", "近36个月法定代表人变更次数",
       "Legal-representative changes, last 36 months",
       "近36个月法定代表人变更{value}", "Legal-representative changes in the last 36 months: {value}", 1, "z"),
    _F("reg_addr_chg_12m", "registry_events", "governance", "count", "近12个月地址变更次数",
       "Address changes, last 12 months",
       "近12个月地址变更{value}", "Registered-address changes in the last 12 months: {value}", 1, "z"),
    _F("reg_cap_chg_12m", "registry_events", "governance", "count", "近12个月注册资本变更次数",
       "Registered-capital changes, last 12 months",
       "近12个月注册资本变更{value}", "Registered-capital changes in the last 12 months: {value}", 0, "z"),
    _F("reg_cap_cut_12m", "registry_events", "governance", "amount", "近12个月注册资本减少额",
       "Registered capital withdrawn, last 12 months",
       "近12个月注册资本减少{value}", "Registered capital cut by {value} in the last 12 months", 1, "log"),
    _F("reg_months_since_event", "registry_events", "governance", "months", "距最近一次登记变更月数",
       "Months since the latest registry event (missing if none)",
       "距最近一次登记变更仅{value}", "Latest registry change only {value} ago", -1, "z"),
    _F("reg_penalty_12m", "registry_events", "litigation", "count", "近12个月行政处罚次数",
       "Administrative penalties, last 12 months",
       "近12个月受到行政处罚{value}", "Administrative penalties in the last 12 months: {value}", 1, "z"),
    _F("reg_penalty_36m", "registry_events", "litigation", "count", "近36个月行政处罚次数",
       "Administrative penalties, last 36 months",
       "近36个月受到行政处罚{value}", "Administrative penalties in the last 36 months: {value}", 1, "z"),
    _F("reg_litig_3m", "registry_events", "litigation", "count", "近3个月涉诉次数",
       "Lawsuits against the firm, last 3 months",
       "近3个月涉诉{value}", "Lawsuits against the firm in the last 3 months: {value}", 1, "z"),
    _F("reg_litig_12m", "registry_events", "litigation", "count", "近12个月涉诉次数",
       "Lawsuits against the firm, last 12 months",
       "近12个月涉诉{value}", "Lawsuits against the firm in the last 12 months: {value}", 1, "z"),
    _F("reg_litig_36m", "registry_events", "litigation", "count", "近36个月涉诉次数",
       "Lawsuits against the firm, last 36 months",
       "近36个月涉诉{value}", "Lawsuits against the firm in the last 36 months: {value}", 1, "z"),
    _F("reg_litig_amt_12m", "registry_events", "litigation", "amount", "近12个月涉诉金额",
       "Amount claimed in lawsuits, last 12 months",
       "近12个月涉诉金额{value}", "Lawsuits claiming {value} in the last 12 months", 1, "log"),
    # --- related parties (shared controller) ---
    _F("rel_n_related", "enterprises", "related_party", "number", "关联企业数",
       "Other firms under the same controller",
       "同一实际控制人下关联企业数为{value}", "Related firms under the same controller: {value}", 0, "z"),
    _F("rel_arrears_firms_12m", "loans", "related_party", "number", "近12个月逾期关联企业数",
       "Related firms with loans past due in the last 12 months",
       "近12个月贷款逾期的关联企业数为{value}", "Related firms with loans past due in the last 12 months: {value}", 1, "z"),
    _F("rel_max_dpd_12m", "loans", "related_party", "days", "近12个月关联企业最长逾期天数",
       "Longest days past due among related firms, 12 months (capped at 180)",
       "近12个月关联企业贷款最长逾期{value}", "Related firms' loans up to {value} past due in the last 12 months", 1, "z"),
    _F("rel_default_firms_12m", "loans", "related_party", "number", "近12个月违约关联企业数",
       "Related firms 90+ days past due in the last 12 months",
       "近12个月违约的关联企业数为{value}", "Related firms in default in the last 12 months: {value}", 1, "z"),
    _F("rel_late_tax_share_12m", "tax_filings", "related_party", "share", "近12期关联企业逾期申报占比",
       "Share of related firms' tax returns filed late, 12 periods",
       "近12期关联企业逾期申报占比{value}", "Related firms filed {value} of tax returns late over 12 periods", 1, "z"),
    _F("rel_litig_12m", "registry_events", "related_party", "count", "近12个月关联企业涉诉次数",
       "Lawsuits against related firms, last 12 months",
       "近12个月关联企业涉诉{value}", "Lawsuits against related firms in the last 12 months: {value}", 1, "z"),
    # --- firmographics ---
    _F("ent_industry", "enterprises", "firmographic", "category", "行业门类(GB/T 4754)",
       "Industry section (GB/T 4754)", "所属行业门类为{value}", "Industry section {value}", 0, "vocab"),
    _F("ent_province", "enterprises", "firmographic", "category", "注册省份", "Province of registration",
       "注册地为{value}", "Registered in {value}", 0, "vocab"),
    _F("ent_legal_form", "enterprises", "firmographic", "category", "企业类型", "Legal form",
       "企业类型为{value}", "Legal form: {value}", 0, "vocab"),
    _F("ent_reg_capital", "enterprises", "firmographic", "amount", "注册资本", "Registered capital",
       "注册资本为{value}", "Registered capital of {value}", -1, "log"),
    _F("ent_age_years", "enterprises", "firmographic", "years", "企业成立年限",
       "Years since establishment (capped at 30)",
       "企业成立{value}", "Established {value} ago", -1, "log"),
    _F("ent_rep_age", "enterprises", "firmographic", "age", "法定代表人年龄", "Legal representative's age",
       "法定代表人年龄为{value}", "Legal representative aged {value}", 0, "z"),
    # --- data history ---
    _F("hist_months", "derived", "history", "months", "可用数据月数",
       "Months of feed history available, up to 12",
       "可用经营数据仅{value}", "Only {value} of trading data available", -1, "z"),
    _F("hist_inv_months_12m", "invoices", "history", "months", "近12个月有开票的月数",
       "Months with any invoice (sales or purchases) in the last 12",
       "近12个月仅{value}有开票记录", "Invoices in only {value} of the last 12", -1, "z"),
    # --- the firm's own loan performance (appended: reason codes are positional, keep them stable)
    _F("loan_dpd_now", "loans", "arrears", "days", "当前贷款逾期天数",
       "Days past due on the firm's loans at the latest month-end",
       "当前贷款逾期{value}", "Loans currently {value} past due", 1, "z"),
    _F("loan_max_dpd_12m", "loans", "arrears", "days", "近12个月贷款最长逾期天数",
       "Longest days past due on the firm's loans, last 12 months",
       "近12个月贷款最长逾期{value}", "Loans up to {value} past due in the last 12 months", 1, "z"),
    _F("loan_arrears_months_12m", "loans", "arrears", "months", "近12个月贷款逾期月数",
       "Month-ends with loans past due, last 12 months",
       "近12个月有{value}贷款逾期", "Loans past due at {value} of the last 12 month-ends", 1, "z"),
])

# Inputs that would otherwise grow with the calendar or with how long the feeds have been
# collected, capped where the training snapshots (12 months of history and up) still see every
# value: feed history (the nightly book would see 36 months, training 12-24), a firm's age (the
# book ages a year between training and scoring) and related firms' days past due (a defaulted
# loan adds 30 days a month for ever). Beyond these values risk no longer changes anyway.
CAPS: dict[str, float] = {"hist_months": 12.0, "ent_age_years": 30.0, "rel_max_dpd_12m": 180.0}

for _i, _f in enumerate(FEATURES):
    object.__setattr__(_f, "code", f"R{_i + 1:03d}")
    object.__setattr__(_f, "cap", CAPS.get(_f.name))

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
NUMERIC: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.is_categorical)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_categorical)

# Columns beside the features in every feature row (not model inputs).
KEY_COLUMNS = ("enterprise_id", "as_of_date")
META_COLUMNS = ("in_default", "months_history", "label_default_12m")


# ---------- rendering a value inside a sentence ----------
def _num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _amount_zh(x: float) -> str:
    if abs(x) >= 1e8:
        return f"{x / 1e8:.2f}亿元"
    if abs(x) >= 1e4:
        return f"{x / 1e4:.1f}万元"
    return f"{x:.0f}元"


def render_value(feature: Feature, value, lang: str) -> str:
    """The firm's value as it reads in a reason sentence, in 'zh' or 'en'."""
    zh = lang == "zh"
    if is_missing(value):
        return "无数据" if zh else "no data"
    k = feature.kind
    if k == "category":
        return str(value)
    v = float(value)
    if k == "pct_change":
        pct = round(abs(v) * 100)
        if pct == 0:
            return "基本持平" if zh else "flat"
        if zh:
            return f"{'下降' if v < 0 else '增长'}{pct}%"
        return f"{'down' if v < 0 else 'up'} {pct}%"
    if k == "share":
        return f"{v * 100:.0f}%"
    if k == "amount":
        return _amount_zh(v) if zh else f"CNY {_num(v)}"
    if k == "kwh":
        return f"{_num(v)}千瓦时" if zh else f"{_num(v)} kWh"
    if k == "count":  # events
        return f"{round(v)}次" if zh else str(round(v))
    if k == "number":  # things: invoices, customers, firms
        return str(round(v))
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
        return f"{pct:+.1f}%"
    return f"{v:.2f}"


def is_missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, numbers.Real) and math.isnan(value))


def reason_text(feature: Feature, value) -> tuple[str, str]:
    """(zh, en) sentences stating the firm's actual value (or that there is none)."""
    if is_missing(value):
        return f"{feature.desc_zh}：无数据", f"{feature.desc_en}: no data"
    return (feature.reason_zh.format(value=render_value(feature, value, "zh")),
            feature.reason_en.format(value=render_value(feature, value, "en")))
