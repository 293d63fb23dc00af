-- The grade migration matrix between any two as-of dates: bind $from_date and $to_date (in
-- BigQuery @from_date and @to_date). Firms scored only on to_date come from 'new'; firms scored
-- only on from_date go to 'exited'. share_of_from_grade is the row's share of the firms that
-- started in from_grade (each row of the matrix sums to 1). The grade_migration view holds the
-- same matrix for every two consecutive dates.
WITH earlier AS (
    SELECT enterprise_id, grade FROM scores WHERE as_of_date = $from_date
),
later AS (
    SELECT enterprise_id, grade FROM scores WHERE as_of_date = $to_date
),
moves AS (
    SELECT COALESCE(b.grade, 'new') AS from_grade, COALESCE(a.grade, 'exited') AS to_grade
    FROM earlier AS b
    FULL OUTER JOIN later AS a ON a.enterprise_id = b.enterprise_id
),
counts AS (
    SELECT from_grade, to_grade, COUNT(*) AS n_firms
    FROM moves
    GROUP BY from_grade, to_grade
)
SELECT
    from_grade,
    to_grade,
    n_firms,
    CAST(n_firms AS DOUBLE) / SUM(n_firms) OVER (PARTITION BY from_grade) AS share_of_from_grade
FROM counts;
