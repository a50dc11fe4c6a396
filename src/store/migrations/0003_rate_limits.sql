-- Cluster-wide rate limits (the reference's 10 messages per second per
-- token and 1 per second per phone number), as GCRA: each key's
-- theoretical arrival time, Unix milliseconds by PostgreSQL's clock.
CREATE TABLE convgate_rate_limits (
    key text PRIMARY KEY,
    tat double precision NOT NULL
);
