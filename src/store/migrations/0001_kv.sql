-- convgate's store on PostgreSQL: the same ordered key space as the
-- embedded store (see the key layout in src/store/mod.rs), one row a key.
-- bytea compares byte by byte, as sled orders keys, so range reads match.
CREATE TABLE kv (
    k bytea PRIMARY KEY,
    v bytea NOT NULL
);
