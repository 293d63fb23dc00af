-- Every recorded attempt, newest first: what went in, what came out, which gates it passed, why it
-- failed, and which succeeded attempt serves each date.
CREATE OR REPLACE VIEW run_history AS
SELECT
    attempt_id,
    run_id,
    as_of_date,
    model_version,
    status,
    serving,
    started_at,
    finished_at,
    rows_in,
    rows_rejected,
    firms_scored_model,
    firms_scored_rules,
    gates,
    message,
    config_fingerprint
FROM runs
ORDER BY started_at DESC, attempt_id;
