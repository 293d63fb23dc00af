-- Monthly loan performance: outcomes (labels), current default status, related-party arrears. The
-- records known on @as_of_date: report_month on or before it. A record without a report_month is
-- kept, so that validation rejects it with a reason instead of this filter dropping it silently.
SELECT
    loan_id,
    enterprise_id,
    report_month,
    origination_date,
    balance,
    days_past_due
FROM loans
WHERE report_month <= @as_of_date OR report_month IS NULL
