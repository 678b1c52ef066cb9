-- `PUT /api/stores/{id}` with `If-Match`: store-service's `update`
-- (storage.rs), the same two statements in one transaction: ONE
-- conditional `UPDATE ... RETURNING` (version and lifecycle checked in the
-- statement, the row as it was from the self-join), then the UPDATED
-- event. A rename: status, config and secrets unchanged (NULL), every
-- status allowed as the starting one.
--
-- Each client updates its own seeded row, counted from the last one
-- (`rows`, `rows` - 1, ...; the service's connections own rows 1, 2, ...),
-- so there is no lock contention and the rows start at version 1.
-- Like the service's client, which sends the version its last response
-- returned, pgbench carries it: `p_version` is the version the last UPDATE
-- replaced (`before.version`, the last `version` column it returned), 0
-- before the first (xtask's `-D p_version=0`).
\set n :rows - :client_id
\set expected :p_version + 1
BEGIN;
UPDATE stores AS s SET name = COALESCE('Renamed by pgbench', s.name), status = COALESCE(NULL::text, s.status),
       config = COALESCE(NULL::jsonb, s.config), secrets = COALESCE(NULL::jsonb, s.secrets),
       version = s.version + 1, updated_at = now()
  FROM stores AS before
 WHERE s.id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid
   AND s.version = :expected AND s.status = ANY(ARRAY['PROVISIONING', 'ACTIVE', 'DECOMMISSIONED'])
   AND before.id = s.id AND before.version = :expected
RETURNING s.id, s.name, s.status, s.config, s.version, s.created_at, s.updated_at, s.secrets,
          before.id, before.name, before.status, before.config, before.version, before.created_at, before.updated_at, before.secrets
\gset p_
INSERT INTO store_events (store_id, version, occurred_at, kind, changes, request_id, actor)
VALUES (('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid, :expected + 1, now(), 'UPDATED',
        '[{"field": "name", "old": "Renamed store A", "new": "Renamed by pgbench"}]', 'pgbench', NULL);
END;
