"""Hand-made feeds whose feature values are worked out by hand in test_features.py."""
from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import feeds

D = dt.date(2026, 6, 30)


def _months(start: dt.date, n: int):
    y, m = start.year, start.month
    for _ in range(n):
        yield dt.date(y, m, 1)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def _next_month(d: dt.date, day: int) -> dt.date:
    return dt.date(d.year + (d.month == 12), d.month % 12 + 1, day)


def records() -> dict[str, list[dict]]:
    ent = [
        dict(enterprise_id="E1", uscc_hash="h1", industry="C", province="Zhejiang",
             legal_form="limited_company", registered_capital=1_000_000.0,
             established_date=dt.date(2020, 1, 15), legal_rep_age=45, controller_id="C1"),
        dict(enterprise_id="E2", uscc_hash="h2", industry="F", province="Zhejiang",
             legal_form="individual_business", registered_capital=50_000.0,
             established_date=dt.date(2026, 3, 1), legal_rep_age=None, controller_id="C1"),
        dict(enterprise_id="E3", uscc_hash="h3", industry="F", province="Jiangsu",
             legal_form="limited_company", registered_capital=10_000.0,
             established_date=dt.date(2027, 1, 1), legal_rep_age=30, controller_id="C3"),
        dict(enterprise_id="E4", uscc_hash="h4", industry="E", province="Hebei",
             legal_form="partnership", registered_capital=200_000.0,
             established_date=dt.date(2015, 5, 5), legal_rep_age=60, controller_id="C4"),
    ]
    inv = []
    for i, m in enumerate(_months(dt.date(2025, 7, 1), 12)):
        amount = 10_000.0 if m < dt.date(2026, 4, 1) else 6_000.0
        cp = "K2" if m == dt.date(2026, 6, 1) else "K1"
        inv.append(dict(invoice_id=f"S{i}", enterprise_id="E1", invoice_date=m.replace(day=10),
                        direction="sales", amount=amount, counterparty_id=cp, status="normal"))
    inv += [
        dict(invoice_id="V1", enterprise_id="E1", invoice_date=dt.date(2026, 5, 20),
             direction="sales", amount=500.0, counterparty_id="K1", status="void"),
        dict(invoice_id="LATE", enterprise_id="E1", invoice_date=dt.date(2026, 7, 2),
             direction="sales", amount=99_999.0, counterparty_id="K1", status="normal"),
        dict(invoice_id="P1", enterprise_id="E1", invoice_date=dt.date(2026, 6, 5),
             direction="purchase", amount=4_000.0, counterparty_id="S1", status="normal"),
    ]
    for i, m in enumerate(_months(dt.date(2026, 4, 1), 3)):
        inv.append(dict(invoice_id=f"Y{i}", enterprise_id="E2", invoice_date=m.replace(day=3),
                        direction="sales", amount=1_000.0, counterparty_id="K9", status="normal"))
    tax = []
    for m in _months(dt.date(2025, 6, 1), 13):           # periods 2025-06 .. 2026-06
        late = m == dt.date(2026, 2, 1)
        filed = _next_month(m, 25 if late else 10)
        tax.append(dict(enterprise_id="E1", period_month=m, filed_date=filed,
                        taxable_sales=10_000.0, vat_paid=300.0, filed_late=late,
                        si_headcount=8 if m == dt.date(2026, 5, 1) else 10))
    bills = []
    for m in _months(dt.date(2025, 5, 1), 13):           # periods 2025-05 .. 2026-05
        bills.append(dict(enterprise_id="E1", period_month=m, bill_date=_next_month(m, 5),
                          kwh=700.0 if m == dt.date(2026, 5, 1) else 1_000.0,
                          amount=800.0, days_overdue=12 if m == dt.date(2026, 4, 1) else 0))
    events = [
        dict(event_id="R1", enterprise_id="E1", event_date=dt.date(2026, 1, 10),
             event_type="legal_rep_change", amount=None),
        dict(event_id="R2", enterprise_id="E1", event_date=dt.date(2025, 3, 1),
             event_type="legal_rep_change", amount=None),
        dict(event_id="R3", enterprise_id="E1", event_date=dt.date(2026, 6, 15),
             event_type="litigation", amount=50_000.0),
        dict(event_id="R4", enterprise_id="E1", event_date=dt.date(2023, 12, 20),
             event_type="litigation", amount=1_000.0),      # 30 months back: in the 36-month window
    ]
    loans = []
    for m in _months(dt.date(2025, 7, 1), 15):           # report months 2025-07 .. 2026-09
        month_end = _next_month(m, 1) - dt.timedelta(days=1)
        loans.append(dict(loan_id="L1", enterprise_id="E1", report_month=month_end,
                          origination_date=dt.date(2024, 1, 1), balance=100_000.0,
                          days_past_due=90 if month_end == dt.date(2026, 9, 30) else 0))
        loans.append(dict(loan_id="L4", enterprise_id="E4", report_month=month_end,
                          origination_date=dt.date(2023, 1, 1), balance=50_000.0,
                          days_past_due=95 if month_end >= dt.date(2026, 3, 31) else 0))
    loans.append(dict(loan_id="L2", enterprise_id="E2", report_month=dt.date(2026, 5, 31),
                      origination_date=dt.date(2026, 4, 1), balance=20_000.0, days_past_due=30))
    return {"enterprises": ent, "invoices": inv, "tax_filings": tax, "utility_bills": bills,
            "registry_events": events, "loans": loans}


def tables() -> dict[str, pa.Table]:
    return {name: pa.Table.from_pylist(rows, schema=feeds.FEEDS[name].schema)
            for name, rows in records().items()}


def write(folder: str) -> str:
    for name, table in tables().items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        pq.write_table(table, os.path.join(folder, name, "part-00000.parquet"))
    return folder
