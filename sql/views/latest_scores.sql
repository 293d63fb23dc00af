-- Each firm's score on the most recent as_of_date in `scores`: the current book. A firm that is
-- not scored on that date (it left the portfolio) does not appear.
CREATE OR REPLACE VIEW latest_scores AS
SELECT s.*
FROM scores AS s
WHERE s.as_of_date = (SELECT MAX(as_of_date) FROM scores);
