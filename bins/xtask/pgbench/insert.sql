-- `POST /api/stores`: store-service's `insert` (storage.rs): the store and
-- its CREATED event in one transaction.
BEGIN;
INSERT INTO stores (id, name, status, config, version, created_at, updated_at, secrets)
VALUES (gen_random_uuid(), 'Bench store', 'PROVISIONING', '{"tier": "bench"}', 1, now(), now(), '{}')
RETURNING id AS new_id \gset
INSERT INTO store_events (store_id, version, occurred_at, kind, changes, request_id)
VALUES (:new_id::uuid, 1, now(), 'CREATED',
        '[{"field": "name", "old": null, "new": "Bench store"}, {"field": "status", "old": null, "new": "PROVISIONING"}]',
        'pgbench');
END;
