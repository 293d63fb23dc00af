-- Per as_of_date x model_version x segment x business feature: how many model-scored firms carry
-- the feature, how many lose points on it, and their points (sum, mean, mean |points|: what
-- attribution drift compares) and mean log-odds. Segments: 'all', each industry, each region
-- (firm_segments; 'unknown' for a firm without one). A date whose full `attributions` rows the
-- retention policy compacted (`smescore retain`) is read from `attributions_compact`, which holds
-- these very aggregates, so a series over time reads the same whichever form a date is kept in.
CREATE OR REPLACE VIEW attribution_summary AS
WITH full_rows AS (
    SELECT a.as_of_date, a.model_version, a.feature, a.phi, a.points,
           COALESCE(g.industry, 'unknown') AS industry,
           COALESCE(g.region, 'unknown') AS region
    FROM attributions AS a
    LEFT JOIN firm_segments AS g
      ON g.as_of_date = a.as_of_date AND g.enterprise_id = a.enterprise_id
),
cut AS (
    SELECT as_of_date, model_version, 'all' AS segment_type, 'all' AS segment, feature, phi, points
    FROM full_rows
    UNION ALL
    SELECT as_of_date, model_version, 'industry', industry, feature, phi, points FROM full_rows
    UNION ALL
    SELECT as_of_date, model_version, 'region', region, feature, phi, points FROM full_rows
)
SELECT as_of_date, model_version, segment_type, segment, feature,
       COUNT(*) AS n_firms,
       CAST(SUM(CASE WHEN points < 0 THEN 1 ELSE 0 END) AS BIGINT) AS n_negative,
       SUM(points) AS sum_points,
       AVG(points) AS mean_points,
       AVG(ABS(points)) AS mean_abs_points,
       AVG(phi) AS mean_phi
FROM cut
GROUP BY as_of_date, model_version, segment_type, segment, feature
UNION ALL
SELECT c.as_of_date, c.model_version, c.segment_type, c.segment, c.feature, c.n_firms,
       c.n_negative, c.sum_points, c.mean_points, c.mean_abs_points, c.mean_phi
FROM attributions_compact AS c
WHERE c.as_of_date NOT IN (SELECT DISTINCT as_of_date FROM attributions);
