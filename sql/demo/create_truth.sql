-- The demo world's ground truth (docs/demo-data.md, "Ground truth"): for every exposed demo
-- impression, the click logit the simulator drew its click from and its parts. A side table
-- of the demo only, keyed by (request, item) (an item appears once per request): request_key
-- is the 64-bit key whose printf('%016x', request_key) is the impression's request_id (kept as
-- a number: half the bytes of the text). The raw tables and their contract do not know it.
-- Written in the same load as the rows.
CREATE TABLE IF NOT EXISTS demo_truth (
    request_key BIGINT NOT NULL,
    item_id BIGINT NOT NULL,
    logit DOUBLE NOT NULL,          -- user_part + hist_part: click ~ Bernoulli(sigmoid(logit))
    user_part DOUBLE NOT NULL,      -- bias, taste, affinity, popularity, quality, price, position
    hist_part DOUBLE NOT NULL,      -- the terms that depend on individual history behaviours
    position_part DOUBLE NOT NULL,  -- the display position's term (inside user_part)
    load_id VARCHAR NOT NULL
)
