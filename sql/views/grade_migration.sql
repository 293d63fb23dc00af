-- Grade migration between every two consecutive as_of_dates in `scores` (filter the pair you
-- want on from_date/to_date). Firms scored only on the later date come from 'new'; firms scored
-- only on the earlier one go to 'exited'. share_of_from_grade is the row's share of the firms that
-- started in from_grade (a row of the transition matrix sums to 1).
CREATE OR REPLACE VIEW grade_migration AS
WITH dates AS (
    SELECT DISTINCT as_of_date FROM scores
),
pairs AS (
    SELECT as_of_date AS from_date, LEAD(as_of_date) OVER (ORDER BY as_of_date) AS to_date
    FROM dates
),
earlier AS (
    SELECT p.from_date, p.to_date, s.enterprise_id, s.grade
    FROM pairs AS p JOIN scores AS s ON s.as_of_date = p.from_date
    WHERE p.to_date IS NOT NULL
),
later AS (
    SELECT p.from_date, p.to_date, s.enterprise_id, s.grade
    FROM pairs AS p JOIN scores AS s ON s.as_of_date = p.to_date
    WHERE p.to_date IS NOT NULL
),
moves AS (
    SELECT COALESCE(b.from_date, a.from_date) AS from_date,
           COALESCE(b.to_date, a.to_date) AS to_date,
           COALESCE(b.grade, 'new') AS from_grade,
           COALESCE(a.grade, 'exited') AS to_grade
    FROM earlier AS b
    FULL OUTER JOIN later AS a
      ON a.from_date = b.from_date AND a.enterprise_id = b.enterprise_id
),
counts AS (
    SELECT from_date, to_date, from_grade, to_grade, COUNT(*) AS n_firms
    FROM moves
    GROUP BY from_date, to_date, from_grade, to_grade
)
SELECT
    from_date,
    to_date,
    from_grade,
    to_grade,
    n_firms,
    CAST(n_firms AS DOUBLE) / SUM(n_firms) OVER (PARTITION BY from_date, from_grade)
        AS share_of_from_grade
FROM counts;
