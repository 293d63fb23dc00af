-- Per as_of_date x model_version x grade: firms, their share of the firms scored, mean PD.
-- grade_order sorts '1'..'10' numerically with 'D' (in default) last.
CREATE OR REPLACE VIEW grade_distribution AS
WITH per_grade AS (
    SELECT as_of_date, model_version, grade, COUNT(*) AS n_firms, AVG(pd) AS mean_pd
    FROM scores
    GROUP BY as_of_date, model_version, grade
)
SELECT
    as_of_date,
    model_version,
    grade,
    CASE WHEN grade = 'D' THEN 99 ELSE CAST(grade AS INTEGER) END AS grade_order,
    n_firms,
    CAST(n_firms AS DOUBLE) / SUM(n_firms) OVER (PARTITION BY as_of_date, model_version) AS share,
    mean_pd
FROM per_grade;
