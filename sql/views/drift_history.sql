-- Drift run after run: per as_of_date x model_version x feature x segment x metric, the value
-- against the training references stored with the model version, its thresholds and status, and
-- how it moved since the previous run of the same model version (null on its first run). The
-- score's own PSI is feature = '__score__' (segment 'all', or 'industry=<section>'). Metrics:
-- 'psi' against the book as of the training date, 'psi_training_sample' and 'out_of_range'
-- against the training sample, 'missing_rate_change', 'attribution_drift'.
CREATE OR REPLACE VIEW drift_history AS
SELECT
    as_of_date,
    model_version,
    feature,
    segment,
    metric,
    value,
    LAG(value) OVER (PARTITION BY model_version, feature, segment, metric
                     ORDER BY as_of_date) AS previous_value,
    value - LAG(value) OVER (PARTITION BY model_version, feature, segment, metric
                             ORDER BY as_of_date) AS change_since_previous,
    warn_threshold,
    threshold,
    status,
    LAG(status) OVER (PARTITION BY model_version, feature, segment, metric
                      ORDER BY as_of_date) AS previous_status,
    run_id
FROM drift;
