-- Every recorded run, newest first: what went in, what came out, why a run failed.
CREATE OR REPLACE VIEW run_history AS
SELECT
    run_id,
    as_of_date,
    model_version,
    status,
    started_at,
    finished_at,
    rows_in,
    rows_rejected,
    firms_scored_model,
    firms_scored_rules,
    message,
    config_fingerprint
FROM runs
ORDER BY started_at DESC, run_id;
