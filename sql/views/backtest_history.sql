-- Outcome backtests cohort after cohort: per scored as_of_date x model_version x segment x
-- outcome window, how the PDs ranked the defaults that followed (AUC, Gini, KS) and how they
-- calibrated (predicted vs observed default rate, binomial test). gini_change is against the
-- previous backtested cohort of the same model version, segment and window (null for the first).
CREATE OR REPLACE VIEW backtest_history AS
SELECT
    as_of_date,
    model_version,
    segment_type,
    segment,
    outcome_months,
    n_firms,
    n_defaults,
    auc,
    gini,
    ks,
    brier,
    predicted_default_rate,
    observed_default_rate,
    observed_default_rate - predicted_default_rate AS default_rate_gap,
    binomial_p_value,
    calibration_status,
    gini - LAG(gini) OVER (PARTITION BY model_version, segment_type, segment, outcome_months
                           ORDER BY as_of_date) AS gini_change,
    backtested_at
FROM performance;
