-- Leases: which node runs a cluster-wide job (the background workers),
-- until when. A node renews its lease well before `expires_at`; another
-- takes it only once it has expired (PostgreSQL's clock decides).
CREATE TABLE convgate_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);
