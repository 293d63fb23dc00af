-- Monthly VAT returns with social-insurance headcount; a missing month is a missing row. The
-- records known on @as_of_date: filed_date on or before it. A record without a filed_date is kept,
-- so that validation rejects it with a reason instead of this filter dropping it silently.
SELECT
    enterprise_id,
    period_month,
    filed_date,
    taxable_sales,
    vat_paid,
    filed_late,
    si_headcount
FROM tax_filings
WHERE filed_date <= @as_of_date OR filed_date IS NULL
