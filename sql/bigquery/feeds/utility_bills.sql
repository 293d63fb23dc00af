-- Monthly electricity bills. The records known on @as_of_date: bill_date on or before it. A record
-- without a bill_date is kept, so that validation rejects it with a reason instead of this filter
-- dropping it silently.
SELECT
    enterprise_id,
    period_month,
    bill_date,
    kwh,
    amount,
    days_overdue
FROM utility_bills
WHERE bill_date <= @as_of_date OR bill_date IS NULL
