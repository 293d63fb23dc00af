-- E-invoices (fapiao), one row per invoice. The records known on @as_of_date: invoice_date on or
-- before it. A record without a invoice_date is kept, so that validation rejects it with a reason
-- instead of this filter dropping it silently.
SELECT
    invoice_id,
    enterprise_id,
    invoice_date,
    direction,
    amount,
    counterparty_id,
    status
FROM invoices
WHERE invoice_date <= @as_of_date OR invoice_date IS NULL
