-- The portfolio's firms: the whole registry master. A firm established after @as_of_date is left
-- out by the features (as with the files source), so its records are not rejected as unknown.
SELECT
    enterprise_id,
    uscc_hash,
    industry,
    province,
    legal_form,
    registered_capital,
    established_date,
    legal_rep_age,
    controller_id
FROM enterprises
