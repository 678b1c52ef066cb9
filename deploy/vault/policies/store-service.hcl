# The store service's Vault/OpenBao policy: least privilege, the same paths
# as the local stack's (bins/xtask/src/stack.rs, POLICY). Bound to the
# Kubernetes auth role `store-service` (and the AppRole bridge) by setup.sh.
# Token self-management (renew-self, lookup-self) comes from `default`.

# Its own KV v2 secrets (read only).
path "secret/data/store-service/*" {
  capabilities = ["read"]
}
path "secret/metadata/store-service/*" {
  capabilities = ["read", "list"]
}

# Transit on its key only: encrypt/decrypt store secrets, rewrap after a
# key rotation, and the HMAC that derives the Idempotency-Key fingerprint
# key. No key management (rotate, export, delete, config).
path "transit/encrypt/store-secrets" {
  capabilities = ["update"]
}
path "transit/decrypt/store-secrets" {
  capabilities = ["update"]
}
path "transit/rewrap/store-secrets" {
  capabilities = ["update"]
}
path "transit/hmac/store-secrets" {
  capabilities = ["update"]
}

# Dynamic database users of its role (DML only, see setup.sh).
path "database/creds/store-service" {
  capabilities = ["read"]
}

# Renewal and early revocation of its leases. vault-client sends the lease
# id in the body (sys/leases/renew), so the path cannot narrow it to the
# role's prefix; a token can only name lease ids it was given.
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
