-- `PUT /api/stores/{id}`: store-service's `update` (storage.rs): read the
-- row, conditional UPDATE on its version, the UPDATED event, one
-- transaction. Each client updates its own seeded row (client_id + 1), as
-- each load-generator connection does, so there is no lock contention.
\set n :client_id + 1
BEGIN;
SELECT id, name, status, config, version, created_at, updated_at, secrets
  FROM stores
 WHERE id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid \gset p_
UPDATE stores
   SET name = 'Renamed by pgbench', status = 'ACTIVE', config = '{"seed": true}',
       version = :p_version::int + 1, updated_at = now(), secrets = COALESCE(NULL::jsonb, secrets)
 WHERE id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid
   AND version = :p_version::int;
INSERT INTO store_events (store_id, version, occurred_at, kind, changes, request_id)
VALUES (('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid, :p_version::int + 1, now(), 'UPDATED',
        '[{"field": "name", "old": "Renamed store A", "new": "Renamed by pgbench"}]', 'pgbench');
END;
