#!/usr/bin/env bash
# Configures OpenBao/Vault for the platform in a cluster: the same mounts,
# keys, roles and policy as `cargo xtask up` configures locally
# (bins/xtask/src/stack.rs, testkit's configure_database and
# configure_oidc_issuer), with the Kubernetes auth method for the store
# service. Idempotent: run it again after changing anything here.
#
# Needs: `bao` (or `vault`: BAO_BIN=vault) logged in with a token that may
# manage mounts, auth methods and policies (BAO_ADDR/VAULT_ADDR,
# BAO_TOKEN/VAULT_TOKEN), and `kubectl` pointed at the cluster (for the
# database roles inside the CNPG primary and the Secrets it creates).
#
# What it does:
#   1. KV v2 at secret/ with secret/store-service/database (where the
#      database is), Transit at transit/ with the key store-secrets.
#   2. In PostgreSQL (the CNPG primary, through kubectl exec): the login
#      vault_admin (CREATEROLE, ADMIN OPTION on the DML group store_app),
#      and the DML grants of store_app.
#   3. The database secrets engine at database/: connection `stores`
#      (vault_admin, TLS), role `store-service` issuing users that are
#      members of store_app with a CONNECTION LIMIT, 1 h leases renewable
#      to 24 h; then vault_admin's password is rotated so only Vault knows it.
#   4. Policies store-service (policies/store-service.hcl) and oidc-api.
#   5. Kubernetes auth: role store-service bound to the ServiceAccount
#      store-service of $NAMESPACE.
#   6. (none: store-service logs in with Kubernetes auth, BAO_K8S_ROLE)
#   7. The identity token issuer the gateway verifies tokens with: issuer
#      $OIDC_ISSUER, ES256 key `gateway`, role `api` with client id
#      (the tokens' aud) store-platform-api and the `scope` claim.
#   8. The ConfigMap openbao-ca (ca.crt) from $OPENBAO_CA_FILE, if set.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BAO=${BAO_BIN:-bao}
KUBECTL=${KUBECTL:-kubectl}
NAMESPACE=${NAMESPACE:-store-platform}
PG_CLUSTER=${PG_CLUSTER:-stores-db}
DATABASE=${DATABASE:-stores}
SCHEMA_OWNER=${SCHEMA_OWNER:-stores_owner}
DB_HOST=${DB_HOST:-${PG_CLUSTER}-rw.${NAMESPACE}.svc:5432}
CONNECTION_LIMIT=${CONNECTION_LIMIT:-20}
OIDC_ISSUER=${OIDC_ISSUER:-https://openbao.openbao.svc:8200}
OIDC_CLIENT_ID=${OIDC_CLIENT_ID:-store-platform-api}
KUBERNETES_HOST=${KUBERNETES_HOST:-https://kubernetes.default.svc}
OPENBAO_CA_FILE=${OPENBAO_CA_FILE:-}
SKIP_DATABASE=${SKIP_DATABASE:-0}
APP=store-service
TRANSIT_KEY=store-secrets

log() { printf 'setup: %s\n' "$*" >&2; }

# mounted secrets|auth PATH: whether PATH/ is enabled.
mounted() {
    "$BAO" "$1" list -format=json | grep -q "\"$2/\""
}

enable_secrets() { # TYPE PATH [OPTIONS...]
    local type=$1 path=$2
    shift 2
    if mounted secrets "$path"; then
        log "secrets engine $path/ already enabled"
    else
        "$BAO" secrets enable -path="$path" "$@" "$type"
    fi
}

enable_auth() { # TYPE PATH
    if mounted auth "$2"; then
        log "auth method $2/ already enabled"
    else
        "$BAO" auth enable -path="$2" "$1"
    fi
}

# 1. KV and Transit.
enable_secrets kv secret -version=2
"$BAO" kv put secret/store-service/database \
    host="${PG_CLUSTER}-rw.${NAMESPACE}.svc" port=5432 \
    replicas_host="${PG_CLUSTER}-ro.${NAMESPACE}.svc" dbname="$DATABASE" >/dev/null
enable_secrets transit transit
if "$BAO" read "transit/keys/$TRANSIT_KEY" >/dev/null 2>&1; then
    log "transit key $TRANSIT_KEY exists"
else
    "$BAO" write -f "transit/keys/$TRANSIT_KEY" type=aes256-gcm96 >/dev/null
fi

# 2 and 3. PostgreSQL roles and the database secrets engine.
if [[ $SKIP_DATABASE != 1 ]]; then
    primary=$("$KUBECTL" -n "$NAMESPACE" get pods \
        -l "cnpg.io/cluster=$PG_CLUSTER,cnpg.io/instanceRole=primary" \
        -o jsonpath='{.items[0].metadata.name}')
    [[ -n $primary ]] || { log "no primary pod of $PG_CLUSTER in $NAMESPACE"; exit 1; }
    admin_password=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    log "creating vault_admin and the grants of store_app in $primary"
    "$KUBECTL" -n "$NAMESPACE" exec -i "$primary" -c postgres -- \
        psql -v ON_ERROR_STOP=1 -v pw="$admin_password" -d "$DATABASE" -q <<SQL
SELECT 'CREATE ROLE store_app NOLOGIN'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'store_app') \gexec
SELECT 'CREATE ROLE vault_admin LOGIN CREATEROLE'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vault_admin') \gexec
ALTER ROLE vault_admin WITH LOGIN CREATEROLE NOSUPERUSER CONNECTION LIMIT 5 PASSWORD :'pw';
GRANT store_app TO vault_admin WITH ADMIN OPTION;
GRANT CONNECT ON DATABASE "$DATABASE" TO store_app;
GRANT USAGE ON SCHEMA public TO store_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO store_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO store_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "$SCHEMA_OWNER" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO store_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "$SCHEMA_OWNER" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO store_app;
SQL
    enable_secrets database database
    # shellcheck disable=SC2016 # {{username}} and {{password}} are Vault's templates
    "$BAO" write database/config/stores \
        plugin_name=postgresql-database-plugin \
        connection_url="postgresql://{{username}}:{{password}}@${DB_HOST}/${DATABASE}?sslmode=require" \
        username=vault_admin password="$admin_password" \
        password_authentication=scram-sha-256 \
        allowed_roles="$APP" verify_connection=true >/dev/null
    "$BAO" write "database/roles/$APP" db_name=stores \
        creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' CONNECTION LIMIT ${CONNECTION_LIMIT} IN ROLE store_app;" \
        revocation_statements="REVOKE store_app FROM \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";" \
        renew_statements="ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';" \
        default_ttl=1h max_ttl=24h >/dev/null
    "$BAO" write -f database/rotate-root/stores >/dev/null
    log "database engine configured; vault_admin's password rotated by Vault"
fi

# 4. Policies.
"$BAO" policy write "$APP" "$here/policies/store-service.hcl" >/dev/null
"$BAO" policy write oidc-api "$here/policies/oidc-api.hcl" >/dev/null

# 5. Kubernetes auth (OpenBao running in the cluster uses its own service
# account token and CA to review the store service's tokens).
enable_auth kubernetes kubernetes
"$BAO" write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST" >/dev/null
"$BAO" write "auth/kubernetes/role/$APP" \
    bound_service_account_names="$APP" \
    bound_service_account_namespaces="$NAMESPACE" \
    token_policies="$APP" token_ttl=1h token_max_ttl=24h >/dev/null

# 7. The identity token issuer of the gateway's JWTs.
"$BAO" write identity/oidc/config issuer="$OIDC_ISSUER" >/dev/null
"$BAO" write identity/oidc/key/gateway algorithm=ES256 \
    allowed_client_ids="$OIDC_CLIENT_ID" rotation_period=24h verification_ttl=24h >/dev/null
# shellcheck disable=SC2016 # the template is OpenBao's, not the shell's
"$BAO" write identity/oidc/role/api key=gateway ttl=1h client_id="$OIDC_CLIENT_ID" \
    template='{"scope": {{identity.entity.metadata.scope}}}' >/dev/null

# 8. The CA the services trust OpenBao with.
if [[ -n $OPENBAO_CA_FILE ]]; then
    "$KUBECTL" -n "$NAMESPACE" create configmap openbao-ca \
        --from-file=ca.crt="$OPENBAO_CA_FILE" \
        --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
fi

log "done: issuer $OIDC_ISSUER/v1/identity/oidc, audience $OIDC_CLIENT_ID"
