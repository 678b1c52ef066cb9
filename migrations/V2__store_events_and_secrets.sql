-- Transit-encrypted secrets, the cursor-pagination index and the audit trail
-- of every store. See migrations/README.md: never edit a migration once it
-- has been applied anywhere; add a new file instead.

-- Secrets: key name -> Vault Transit ciphertext (`vault:v<n>:...`). Plaintext
-- never reaches the database.
ALTER TABLE stores ADD COLUMN secrets jsonb NOT NULL DEFAULT '{}';

-- `GET /api/stores` pages by (created_at, id): each page is an index range
-- scan whatever the table size, with or without a status filter.
CREATE INDEX stores_created_at_id ON stores (created_at, id);
CREATE INDEX stores_status_created_at_id ON stores (status, created_at, id);

-- The audit trail: one row per create and update, written in the same
-- transaction as the change. `changes` lists each changed field with its old
-- and new value (secrets as key names only).
CREATE TABLE store_events (
    store_id    uuid        NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    version     integer     NOT NULL,
    occurred_at timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('CREATED', 'UPDATED')),
    changes     jsonb       NOT NULL,
    request_id  text        NOT NULL,
    PRIMARY KEY (store_id, version)
);

-- The runtime users (issued by Vault, members of `store_app`) get DML only.
-- When the migration owner is not the role whose default privileges
-- `store_app` already has, these grants make the new tables usable anyway.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'store_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON stores, store_events TO store_app;
    END IF;
END
$$;
