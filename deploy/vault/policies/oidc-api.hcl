# Who may mint API tokens for the gateway: identity tokens of the OIDC role
# `api` (signed with the key `gateway`, `aud` = "store-platform-api",
# `scope` claim from the entity's `scope` metadata). Give it to the
# auth method your API clients log in with (setup.sh does not assign it).
path "identity/oidc/token/api" {
  capabilities = ["read"]
}
