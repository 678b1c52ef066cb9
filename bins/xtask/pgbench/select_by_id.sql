-- `GET /api/stores/{id}`: store-service's `find` (storage.rs), one seeded
-- row at random. Seeded ids are `00000000-0000-4000-8000-<n in hex>`.
\set n random(1, :rows)
SELECT id, name, status, config, version, created_at, updated_at, secrets
  FROM stores
 WHERE id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid;
