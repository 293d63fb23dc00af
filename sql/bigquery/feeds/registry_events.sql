-- Business-registry and court events. The records known on @as_of_date: event_date on or before
-- it. A record without a event_date is kept, so that validation rejects it with a reason instead
-- of this filter dropping it silently.
SELECT
    event_id,
    enterprise_id,
    event_date,
    event_type,
    amount
FROM registry_events
WHERE event_date <= @as_of_date OR event_date IS NULL
