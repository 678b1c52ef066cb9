-- Idempotency-Key records for POST and PUT (IETF httpapi draft semantics).
-- See migrations/README.md: never edit a migration once it has been applied
-- anywhere; add a new file instead.
--
-- A row is created (status NULL: in progress) before the request runs and
-- completed with the response afterwards. Records are kept 24 hours: older
-- rows are ignored by the service and purged by it.
CREATE TABLE idempotency_keys (
    scope       text        NOT NULL,  -- method and path, e.g. `PUT /api/stores/<id>`
    key         text        NOT NULL,  -- the Idempotency-Key header
    fingerprint bytea       NOT NULL,  -- sha256 of the request body and If-Match
    status      smallint,              -- NULL while the first request runs
    headers     jsonb,                 -- the replayed response headers
    body        bytea,                 -- the replayed response body
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'store_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO store_app;
    END IF;
END
$$;
