"""The six nightly feeds: one Arrow schema each, documented column by column.

This module is the contract between whoever produces the feeds (the bank's data platform, or
`smescore generate` for tests and demos) and the feature code. No TensorFlow here.

Layout on disk: `<feeds_dir>/<feed>/*.parquet`, one folder per feed. Dates are calendar dates
(`date32`); money is CNY (`float64`), VAT excluded unless stated.
"""
from __future__ import annotations

import dataclasses

import pyarrow as pa

# GB/T 4754-2017 industry sections A..T (letters; U, international organisations, never borrows).
INDUSTRY_SECTIONS = tuple("ABCDEFGHIJKLMNOPQRST")
PROVINCES = (
    "Beijing", "Tianjin", "Hebei", "Shanxi", "InnerMongolia", "Liaoning", "Jilin", "Heilongjiang",
    "Shanghai", "Jiangsu", "Zhejiang", "Anhui", "Fujian", "Jiangxi", "Shandong", "Henan", "Hubei",
    "Hunan", "Guangdong", "Guangxi", "Hainan", "Chongqing", "Sichuan", "Guizhou", "Yunnan", "Tibet",
    "Shaanxi", "Gansu", "Qinghai", "Ningxia", "Xinjiang",
)
LEGAL_FORMS = ("limited_company", "sole_proprietorship", "partnership", "individual_business")
INVOICE_DIRECTIONS = ("sales", "purchase")
INVOICE_STATUSES = ("normal", "void", "red_letter")
REGISTRY_EVENT_TYPES = (
    "legal_rep_change", "capital_change", "address_change", "admin_penalty", "litigation",
)


@dataclasses.dataclass(frozen=True)
class Feed:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]          # a row's identity: a second row with the same key is a duplicate
    date_column: str              # the date from which the record is known (point-in-time filter)
    description: str


def _schema(*fields: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in fields])


ENTERPRISES = Feed(
    name="enterprises",
    schema=_schema(
        ("enterprise_id", pa.string(), "Bank-internal firm id, e.g. 'E0000042'"),
        ("uscc_hash", pa.string(), "Pseudonymised Unified Social Credit Code (hex digest)"),
        ("industry", pa.string(), "GB/T 4754 industry section letter A..T"),
        ("province", pa.string(), "Province of registration (pinyin)"),
        ("legal_form", pa.string(), "limited_company | sole_proprietorship | partnership | individual_business"),
        ("registered_capital", pa.float64(), "Registered capital, CNY"),
        ("established_date", pa.date32(), "Date of establishment in the business registry"),
        ("legal_rep_age", pa.int32(), "Age in years of the current legal representative (null if unknown)"),
        ("controller_id", pa.string(), "Actual controller; firms sharing it are related parties"),
    ),
    key=("enterprise_id",),
    date_column="established_date",
    description="Registry master: one row per firm in the portfolio.",
)

TAX_FILINGS = Feed(
    name="tax_filings",
    schema=_schema(
        ("enterprise_id", pa.string(), "Firm id"),
        ("period_month", pa.date32(), "Tax period, first day of the month"),
        ("filed_date", pa.date32(), "Date the return was filed (due by the 15th of the next month)"),
        ("taxable_sales", pa.float64(), "Taxable sales declared for the period, CNY"),
        ("vat_paid", pa.float64(), "VAT paid for the period, CNY"),
        ("filed_late", pa.bool_(), "Filed after the statutory deadline"),
        ("si_headcount", pa.int32(), "Employees covered by social insurance in the period"),
    ),
    key=("enterprise_id", "period_month"),
    date_column="filed_date",
    description="Monthly VAT returns with social-insurance headcount; a missing month is a missing row.",
)

INVOICES = Feed(
    name="invoices",
    schema=_schema(
        ("invoice_id", pa.string(), "Unique e-invoice number"),
        ("enterprise_id", pa.string(), "Firm id (issuer for sales, receiver for purchases)"),
        ("invoice_date", pa.date32(), "Issue date"),
        ("direction", pa.string(), "sales | purchase, from the firm's point of view"),
        ("amount", pa.float64(), "Amount excluding VAT, CNY (red-letter invoices carry the amount they reverse)"),
        ("counterparty_id", pa.string(), "Pseudonymised counterparty"),
        ("status", pa.string(), "normal | void | red_letter"),
    ),
    key=("invoice_id",),
    date_column="invoice_date",
    description="E-invoices (fapiao), one row per invoice.",
)

UTILITY_BILLS = Feed(
    name="utility_bills",
    schema=_schema(
        ("enterprise_id", pa.string(), "Firm id"),
        ("period_month", pa.date32(), "Billing period, first day of the month"),
        ("bill_date", pa.date32(), "Date the bill was issued (early next month)"),
        ("kwh", pa.float64(), "Electricity consumed in the period, kWh"),
        ("amount", pa.float64(), "Amount billed, CNY"),
        ("days_overdue", pa.int32(), "Days the bill was paid after its due date (0 = on time)"),
    ),
    key=("enterprise_id", "period_month"),
    date_column="bill_date",
    description="Monthly electricity bills.",
)

REGISTRY_EVENTS = Feed(
    name="registry_events",
    schema=_schema(
        ("event_id", pa.string(), "Unique event id"),
        ("enterprise_id", pa.string(), "Firm id"),
        ("event_date", pa.date32(), "Date the event was recorded"),
        ("event_type", pa.string(), "legal_rep_change | capital_change | address_change | admin_penalty | litigation"),
        ("amount", pa.float64(), "capital_change: signed change in registered capital; admin_penalty: fine; litigation: amount claimed; else null (CNY)"),
    ),
    key=("event_id",),
    date_column="event_date",
    description="Business-registry and court events.",
)

LOANS = Feed(
    name="loans",
    schema=_schema(
        ("loan_id", pa.string(), "Loan id"),
        ("enterprise_id", pa.string(), "Borrower"),
        ("report_month", pa.date32(), "Month-end date of this performance snapshot"),
        ("origination_date", pa.date32(), "Loan origination date"),
        ("balance", pa.float64(), "Outstanding balance at month end, CNY"),
        ("days_past_due", pa.int32(), "Days past due at month end; default = 90+"),
    ),
    key=("loan_id", "report_month"),
    date_column="report_month",
    description="Monthly loan performance: outcomes (labels), current default status, related-party arrears.",
)

FEEDS: dict[str, Feed] = {f.name: f for f in (
    ENTERPRISES, TAX_FILINGS, INVOICES, UTILITY_BILLS, REGISTRY_EVENTS, LOANS)}

DEFAULT_DPD = 90  # 90+ days past due is a default (Basel)
