-- top_risk_drivers cut by industry: per as_of_date x model_version x industry x feature, how many
-- of the industry's firms have the feature among their reasons, their share of the industry's
-- firms scored that date, the points it took away in total and on average, and its rank within
-- the industry (1 = among the reasons of the most firms; ties broken by the larger total loss).
CREATE OR REPLACE VIEW top_risk_drivers_by_industry AS
WITH firms AS (
    SELECT s.as_of_date, s.model_version, s.enterprise_id, s.reasons, g.industry
    FROM scores AS s
    JOIN firm_segments AS g
      ON g.as_of_date = s.as_of_date AND g.enterprise_id = s.enterprise_id
),
reason_rows AS (
    SELECT f.as_of_date, f.model_version, f.industry, f.enterprise_id,
           reason.feature AS feature, reason.points AS points
    FROM firms AS f
    CROSS JOIN UNNEST(f.reasons) AS r(reason)
),
firms_scored AS (
    SELECT as_of_date, model_version, industry, COUNT(*) AS n_scored
    FROM firms
    GROUP BY as_of_date, model_version, industry
),
per_feature AS (
    SELECT as_of_date, model_version, industry, feature,
           COUNT(DISTINCT enterprise_id) AS n_firms,
           SUM(CASE WHEN points < 0 THEN points ELSE 0 END) AS total_negative_points,
           AVG(points) AS mean_points
    FROM reason_rows
    GROUP BY as_of_date, model_version, industry, feature
)
SELECT
    f.as_of_date,
    f.model_version,
    f.industry,
    f.feature,
    f.n_firms,
    CAST(f.n_firms AS DOUBLE) / n.n_scored AS share_of_industry_firms,
    f.total_negative_points,
    f.mean_points,
    RANK() OVER (PARTITION BY f.as_of_date, f.model_version, f.industry
                 ORDER BY f.n_firms DESC, f.total_negative_points ASC) AS rank
FROM per_feature AS f
JOIN firms_scored AS n
  ON n.as_of_date = f.as_of_date AND n.model_version = f.model_version
 AND n.industry = f.industry;
