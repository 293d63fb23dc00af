-- Each firm's score on the most recent as_of_date that a published attempt serves (`runs.serving`):
-- the current book. A firm that is not scored on that date (it left the portfolio) does not
-- appear; a date whose every attempt failed is never served.
CREATE OR REPLACE VIEW latest_scores AS
SELECT s.*
FROM scores AS s
WHERE s.as_of_date = (SELECT MAX(as_of_date) FROM runs WHERE serving);
