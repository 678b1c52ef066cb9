-- `GET /api/stores?limit=50&cursor=...`: store-service's keyset page
-- (storage.rs `list`, LIMIT = limit + 1) after a random seeded row. Seeded
-- row n has created_at = 2026-01-01 + n ms, so its cursor is computable.
\set n random(0, :rows)
SELECT id, name, status, config, version, created_at, updated_at, secrets
  FROM stores
 WHERE (created_at, id) > (timestamptz '2026-01-01 00:00:00+00' + :n::bigint * interval '1 millisecond',
                           ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid)
 ORDER BY created_at, id
 LIMIT 51;
