-- Per as_of_date x model_version x feature: how many firms have the feature among their reasons
-- (the features that took the most points away), the points it took away in total and on average
-- per such firm, and its rank (1 = among the reasons of the most firms; ties broken by the larger
-- total loss). share_of_firms is over all firms scored that date, reasons or not.
CREATE OR REPLACE VIEW top_risk_drivers AS
WITH reason_rows AS (
    SELECT s.as_of_date, s.model_version, s.enterprise_id,
           reason.feature AS feature, reason.points AS points
    FROM scores AS s
    CROSS JOIN UNNEST(s.reasons) AS r(reason)
),
firms_scored AS (
    SELECT as_of_date, model_version, COUNT(*) AS n_scored
    FROM scores
    GROUP BY as_of_date, model_version
),
per_feature AS (
    SELECT as_of_date, model_version, feature,
           COUNT(DISTINCT enterprise_id) AS n_firms,
           SUM(CASE WHEN points < 0 THEN points ELSE 0 END) AS total_negative_points,
           AVG(points) AS mean_points
    FROM reason_rows
    GROUP BY as_of_date, model_version, feature
)
SELECT
    f.as_of_date,
    f.model_version,
    f.feature,
    f.n_firms,
    CAST(f.n_firms AS DOUBLE) / n.n_scored AS share_of_firms,
    f.total_negative_points,
    f.mean_points,
    RANK() OVER (PARTITION BY f.as_of_date, f.model_version
                 ORDER BY f.n_firms DESC, f.total_negative_points ASC) AS rank
FROM per_feature AS f
JOIN firms_scored AS n
  ON n.as_of_date = f.as_of_date AND n.model_version = f.model_version;
