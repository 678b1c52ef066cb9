-- Idempotency records belong to the subject that sent the request, and
-- every store event records who asked for the change. See
-- migrations/README.md: never edit a migration once it has been applied
-- anywhere; add a new file instead.
--
-- The subject is the one the gateway verified and forwarded in
-- `x-gateway-subject`. A request without that header (straight to the
-- service, local use) belongs to the anonymous subject: '' in
-- `idempotency_keys.subject` (a real subject is never empty), NULL in
-- `store_events.actor`.

-- The same Idempotency-Key from two subjects is two independent requests.
-- Existing records (all written before subjects existed) become the
-- anonymous subject's. The primary key is rebuilt on (subject, scope, key);
-- the table holds at most 24 hours of records.
ALTER TABLE idempotency_keys ADD COLUMN subject text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (subject, scope, key);

-- Who asked for each change, written in the same transaction as the change;
-- NULL for the anonymous caller and for every event written before this
-- migration.
ALTER TABLE store_events ADD COLUMN actor text CHECK (actor <> '');

-- The runtime users (issued by Vault, members of `store_app`) get DML only.
-- Table grants cover the new columns; they are repeated here, as in every
-- migration that touches a table, for a migration owner whose default
-- privileges `store_app` does not have.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'store_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, store_events TO store_app;
    END IF;
END
$$;
