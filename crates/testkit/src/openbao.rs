//! A real OpenBao server (Vault API) with integrated `raft` storage.
//!
//! Not `bao server -dev`: a dev server forgets every mount, key and token
//! when it stops, so outage tests (stop, restart, keep going) need the same
//! persistent mode as the local stack. The server is initialised once with a
//! single unseal key, which is kept (mode 0600) beside its data and used to
//! unseal it on every start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{IoContext, PgContext};
use crate::folder::Root;
use crate::postgres::{PgCluster, quote_ident, quote_literal};
use crate::process::{ServerProcess, private_dir};
use crate::{Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const INIT_FILE: &str = "init.json";
const STATE_FILE: &str = "server.json";

/// How a server is built. Obtained from [`OpenBao::builder`].
#[derive(Debug, Clone, Default)]
pub struct OpenBaoBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    binary: Option<PathBuf>,
    tls: Option<TlsListener>,
}

/// A second, TLS-only listener (see [`OpenBaoBuilder::tls`]).
#[derive(Debug, Clone)]
struct TlsListener {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl OpenBaoBuilder {
    /// Keep the server's data in `dir` (reused when it already holds one)
    /// instead of a temporary folder removed on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// A fixed API port (default: a free one). The cluster port is the next
    /// free port. Ignored for a folder that already holds a server.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The `bao` binary (default: [`crate::bao_binary`]).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Adds a second listener that serves TLS with this PEM certificate
    /// (chain) and key, on its own free port: [`OpenBao::tls_addr`]. The
    /// plain-HTTP listener stays, so [`OpenBao::call`] and the setup helpers
    /// work unchanged; clients under test talk to the TLS one with the CA
    /// the test generated.
    pub fn tls(mut self, cert_pem: impl Into<PathBuf>, key_pem: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsListener {
            cert: cert_pem.into(),
            key: key_pem.into(),
            client_ca: None,
        });
        self
    }

    /// Makes the TLS listener require and verify client certificates issued
    /// by this PEM CA (mutual TLS). Needs [`OpenBaoBuilder::tls`].
    pub fn tls_client_ca(mut self, ca_pem: impl Into<PathBuf>) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.client_ca = Some(ca_pem.into());
        }
        self
    }

    /// Starts the server, initialises it on first use, unseals it and waits
    /// until it is the active node.
    pub async fn start(self) -> Result<OpenBao> {
        let started = Instant::now();
        let bin = match &self.binary {
            Some(path) => path.clone(),
            None => crate::binaries::bao_binary()?,
        };
        let (root, existing) = Root::open(self.dir.as_deref(), "testkit-bao-", STATE_FILE)?;
        private_dir(None, root.path())?;
        let mut ports: Ports = if existing {
            root.load(STATE_FILE)?
        } else {
            let ports = Ports {
                api: match self.port {
                    Some(port) => port,
                    None => crate::free_port()?,
                },
                cluster: crate::free_port()?,
                tls: None,
            };
            root.save(STATE_FILE, &ports)?;
            ports
        };
        if self.tls.is_some() && ports.tls.is_none() {
            ports.tls = Some(crate::free_port()?);
            root.save(STATE_FILE, &ports)?;
        }
        let tls_listener = match (&self.tls, ports.tls) {
            (Some(tls), Some(port)) => {
                let client_ca = match &tls.client_ca {
                    Some(ca) => format!(
                        "\n  tls_require_and_verify_client_cert = true\n  tls_client_ca_file = \"{}\"",
                        ca.display()
                    ),
                    None => String::new(),
                };
                format!(
                    r#"listener "tcp" {{
  address       = "127.0.0.1:{port}"
  tls_cert_file = "{cert}"
  tls_key_file  = "{key}"{client_ca}
}}
"#,
                    cert = tls.cert.display(),
                    key = tls.key.display(),
                )
            }
            _ => String::new(),
        };
        let raft = root.path().join("raft");
        private_dir(None, &raft)?;
        let config = root.path().join("config.hcl");
        let hcl = format!(
            r#"# Written by testkit.
storage "raft" {{
  path                   = "{raft}"
  node_id                = "testkit"
  performance_multiplier = 1
}}
listener "tcp" {{
  address         = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable     = true
}}
{tls_listener}pid_file      = "{pid}"
api_addr      = "http://127.0.0.1:{api}"
cluster_addr  = "http://127.0.0.1:{cluster}"
disable_mlock = true
ui            = false
"#,
            raft = raft.display(),
            pid = root.path().join("bao.pid").display(),
            api = ports.api,
            cluster = ports.cluster,
        );
        std::fs::write(&config, hcl).context(|| format!("writing {}", config.display()))?;
        let http = http_client()?;
        let mut bao = OpenBao {
            bin,
            addr: format!("http://127.0.0.1:{}", ports.api),
            tls_addr: match (&self.tls, ports.tls) {
                (Some(_), Some(port)) => Some(format!("https://127.0.0.1:{port}")),
                _ => None,
            },
            config,
            log: root.path().join("bao.log"),
            keys: InitKeys::default(),
            http,
            process: Mutex::new(None),
            root,
        };
        bao.boot().await?;
        tracing::info!(elapsed = ?started.elapsed(), addr = %bao.addr, "OpenBao up");
        Ok(bao)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Ports {
    api: u16,
    cluster: u16,
    /// The TLS listener's port, once one was asked for.
    #[serde(default)]
    tls: Option<u16>,
}

/// The unseal key and root token, as `sys/init` returned them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct InitKeys {
    keys: Vec<String>,
    root_token: String,
}

/// A running OpenBao server, killed on drop.
pub struct OpenBao {
    bin: PathBuf,
    addr: String,
    tls_addr: Option<String>,
    config: PathBuf,
    log: PathBuf,
    keys: InitKeys,
    http: reqwest::Client,
    process: Mutex<Option<ServerProcess>>,
    root: Root,
}

impl fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .field("tls_addr", &self.tls_addr)
            .field("dir", &self.root.path())
            .field("root_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// An AppRole's login pair.
pub struct AppRoleCredentials {
    /// The role id (not secret on its own).
    pub role_id: String,
    /// A secret id.
    pub secret_id: String,
}

impl fmt::Debug for AppRoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRoleCredentials")
            .field("role_id", &self.role_id)
            .field("secret_id", &"<redacted>")
            .finish()
    }
}

/// The database secrets engine's setup: one connection (to a
/// [`PgCluster`]'s primary) and one role whose users get DML rights only.
#[derive(Debug, Clone)]
pub struct DatabaseEngine {
    /// Where the engine is mounted (default `database`).
    pub mount: String,
    /// The connection's name in the engine (default `stores`).
    pub connection: String,
    /// The database the issued users work in (default `stores`; created if
    /// missing).
    pub database: String,
    /// The engine's own login: a role with CREATEROLE, not a superuser
    /// (default `vault_admin`).
    pub admin_role: String,
    /// The NOLOGIN group role that holds the DML grants issued users inherit
    /// (default `store_app`).
    pub group_role: String,
    /// The engine role that issues credentials (default `store-service`).
    pub role: String,
    /// Lease TTL of issued credentials (default 1 h).
    pub default_ttl: Duration,
    /// Maximum TTL of issued credentials (default 24 h).
    pub max_ttl: Duration,
    /// `CONNECTION LIMIT` of each issued user (default 20).
    pub connection_limit: u32,
}

impl Default for DatabaseEngine {
    fn default() -> Self {
        DatabaseEngine {
            mount: "database".into(),
            connection: "stores".into(),
            database: "stores".into(),
            admin_role: "vault_admin".into(),
            group_role: "store_app".into(),
            role: "store-service".into(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            connection_limit: 20,
        }
    }
}

impl OpenBao {
    /// A server in a temporary folder, on a free port.
    pub async fn start() -> Result<OpenBao> {
        OpenBao::builder().start().await
    }

    /// A builder (kept folder, fixed port).
    pub fn builder() -> OpenBaoBuilder {
        OpenBaoBuilder::default()
    }

    /// The API address, e.g. `http://127.0.0.1:8200`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The TLS listener's address, e.g. `https://127.0.0.1:8201`, when the
    /// server was built with [`OpenBaoBuilder::tls`].
    pub fn tls_addr(&self) -> Option<&str> {
        self.tls_addr.as_deref()
    }

    /// The root token. Tests only; never log it.
    pub fn root_token(&self) -> &str {
        &self.keys.root_token
    }

    /// The folder that holds the server's data, config and log.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// The server log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Stops the server (SIGTERM); its data stays. [`OpenBao::restart`]
    /// brings it back on the same port with the same mounts, keys and tokens.
    pub async fn stop(&self) -> Result<()> {
        if let Some(mut process) = self.process.lock().await.take() {
            process.stop(Signal::TERM, STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Kills the server (SIGKILL).
    pub async fn kill(&self) -> Result<()> {
        if let Some(mut process) = self.process.lock().await.take() {
            process.kill();
        }
        Ok(())
    }

    /// Starts a stopped server again, unseals it and waits until it is
    /// active. A running server is stopped first.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.spawn_and_unseal().await
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// but never answered, for timeout paths. Undo with [`OpenBao::thaw`].
    pub async fn freeze(&self) -> Result<()> {
        self.signal(Signal::STOP).await
    }

    /// Resumes a frozen server (SIGCONT).
    pub async fn thaw(&self) -> Result<()> {
        self.signal(Signal::CONT).await
    }

    async fn signal(&self, signal: Signal) -> Result<()> {
        match self.process.lock().await.as_ref() {
            Some(process) => process.signal(signal),
            None => Err(Error::Usage("OpenBao is not running".into())),
        }
    }

    async fn boot(&mut self) -> Result<()> {
        let init_path = self.root.path().join(INIT_FILE);
        self.spawn().await?;
        if init_path.is_file() {
            let text = std::fs::read_to_string(&init_path)
                .context(|| format!("reading {}", init_path.display()))?;
            self.keys = serde_json::from_str(&text)
                .map_err(|e| Error::Usage(format!("{} is damaged: {e}", init_path.display())))?;
        } else {
            let init = self
                .call(
                    Method::PUT,
                    "sys/init",
                    Some(json!({"secret_shares": 1, "secret_threshold": 1})),
                )
                .await?
                .unwrap_or_default();
            self.keys = serde_json::from_value(init)
                .map_err(|e| Error::Usage(format!("sys/init answered: {e}")))?;
            let text =
                serde_json::to_string(&self.keys).map_err(|e| Error::Usage(e.to_string()))?;
            crate::write_private(&init_path, &text)?;
        }
        self.unseal().await
    }

    async fn spawn_and_unseal(&self) -> Result<()> {
        self.spawn().await?;
        self.unseal().await
    }

    async fn spawn(&self) -> Result<()> {
        let mut guard = self.process.lock().await;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg(format!("-config={}", self.config.display()));
        let mut process = ServerProcess::spawn("OpenBao", cmd, &self.log)?;
        let started = tokio::time::Instant::now();
        loop {
            if process.try_exited().is_some() {
                return Err(process.exited_error());
            }
            if self
                .http
                .get(self.url("sys/seal-status"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!(
                        "OpenBao to listen on {} (log: {})",
                        self.addr,
                        self.log.display()
                    ),
                    after: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        *guard = Some(process);
        Ok(())
    }

    async fn unseal(&self) -> Result<()> {
        let key = self
            .keys
            .keys
            .first()
            .ok_or_else(|| Error::Usage("no unseal key was kept".into()))?;
        self.call(Method::PUT, "sys/unseal", Some(json!({ "key": key })))
            .await?;
        let started = tokio::time::Instant::now();
        loop {
            // 200 = initialised, unsealed and active.
            if let Ok(response) = self.http.get(self.url("sys/health")).send().await
                && response.status().as_u16() == 200
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!(
                        "OpenBao at {} to become active (log: {})",
                        self.addr,
                        self.log.display()
                    ),
                    after: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Calls the API with the root token. Returns the JSON body, or `None`
    /// for an empty (204) answer; an error status is an [`Error::Bao`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        api_call(
            &self.http,
            &self.url(path),
            &self.keys.root_token,
            method,
            path,
            body,
        )
        .await
    }

    /// Mounts a secrets engine of `kind` at `path` unless something is
    /// mounted there already.
    pub async fn mount(&self, path: &str, kind: &str, options: Value) -> Result<()> {
        let mounts = self
            .call(Method::GET, "sys/mounts", None)
            .await?
            .unwrap_or_default();
        let key = format!("{}/", path.trim_end_matches('/'));
        let mounted = mounts
            .get(&key)
            .or_else(|| mounts.pointer(&format!("/data/{}", key.replace('/', "~1"))));
        if mounted.is_some() {
            return Ok(());
        }
        self.call(
            Method::POST,
            &format!("sys/mounts/{path}"),
            Some(json!({ "type": kind, "options": options })),
        )
        .await
        .map(drop)
    }

    /// Mounts a KV version 2 engine at `mount` (idempotent).
    ///
    /// A fresh KV v2 mount answers 400 ("Upgrading from non-versioned to
    /// versioned data") for a moment; this waits until it serves requests.
    pub async fn enable_kv2(&self, mount: &str) -> Result<()> {
        self.mount(mount, "kv", json!({ "version": "2" })).await?;
        let started = tokio::time::Instant::now();
        loop {
            match self
                .call(Method::GET, &format!("{mount}/config"), None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Bao { status: 400, .. }) if started.elapsed() < READY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `data` (a JSON object) as the new version of KV v2 secret
    /// `path` under `mount`.
    pub async fn kv_put(&self, mount: &str, path: &str, data: Value) -> Result<()> {
        self.call(
            Method::POST,
            &format!("{mount}/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await
        .map(drop)
    }

    /// Mounts Transit at `mount` (idempotent).
    pub async fn enable_transit(&self, mount: &str) -> Result<()> {
        self.mount(mount, "transit", json!({})).await
    }

    /// Creates Transit key `name` (aes256-gcm96) unless it exists.
    pub async fn create_transit_key(&self, mount: &str, name: &str) -> Result<()> {
        // Creating an existing key is a no-op in the Transit API.
        self.call(
            Method::POST,
            &format!("{mount}/keys/{name}"),
            Some(json!({ "type": "aes256-gcm96" })),
        )
        .await
        .map(drop)
    }

    /// Writes ACL policy `name`.
    pub async fn write_policy(&self, name: &str, hcl: &str) -> Result<()> {
        self.call(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await
        .map(drop)
    }

    /// Enables AppRole (idempotent), writes role `role` with `policies` and
    /// returns its role id and a fresh secret id.
    pub async fn enable_approle(
        &self,
        role: &str,
        policies: &[&str],
        token_ttl: Duration,
    ) -> Result<AppRoleCredentials> {
        let auths = self
            .call(Method::GET, "sys/auth", None)
            .await?
            .unwrap_or_default();
        if auths.get("approle/").is_none() && auths.pointer("/data/approle~1").is_none() {
            self.call(
                Method::POST,
                "sys/auth/approle",
                Some(json!({ "type": "approle" })),
            )
            .await?;
        }
        self.call(
            Method::POST,
            &format!("auth/approle/role/{role}"),
            Some(json!({
                "token_policies": policies,
                "token_ttl": format!("{}s", token_ttl.as_secs()),
                "token_max_ttl": format!("{}s", token_ttl.as_secs() * 24),
            })),
        )
        .await?;
        let role_id = self
            .call(
                Method::GET,
                &format!("auth/approle/role/{role}/role-id"),
                None,
            )
            .await?
            .and_then(|v| {
                v.pointer("/data/role_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| Error::Usage("role-id answered without data.role_id".into()))?;
        let secret_id = self
            .call(
                Method::POST,
                &format!("auth/approle/role/{role}/secret-id"),
                Some(json!({})),
            )
            .await?
            .and_then(|v| {
                v.pointer("/data/secret_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| Error::Usage("secret-id answered without data.secret_id".into()))?;
        Ok(AppRoleCredentials { role_id, secret_id })
    }

    /// Sets up the database secrets engine against `cluster`'s primary
    /// (idempotent):
    ///
    /// - in PostgreSQL: database `engine.database`, a NOLOGIN group role
    ///   with DML rights only (SELECT/INSERT/UPDATE/DELETE on the tables of
    ///   schema `public`, now and later, and USAGE on its sequences), and the
    ///   engine's own login `engine.admin_role` with CREATEROLE (not a
    ///   superuser) and a fresh random password;
    /// - in OpenBao: the engine at `engine.mount`, the connection (over TCP,
    ///   scram-sha-256) and role `engine.role`, whose users are created
    ///   `IN ROLE` the group with `CONNECTION LIMIT` and `VALID UNTIL` the
    ///   lease's end, and dropped on revocation.
    pub async fn configure_database(
        &self,
        cluster: &PgCluster,
        engine: &DatabaseEngine,
    ) -> Result<()> {
        cluster.create_database(&engine.database).await?;
        let admin_password = crate::random_secret();
        let primary = cluster.primary();
        let db = cluster.admin_db(primary, &engine.database).await?;
        let group = quote_ident(&engine.group_role);
        let admin = quote_ident(&engine.admin_role);
        let owner = quote_ident(crate::postgres::SUPERUSER);
        let sql = format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {group_lit}) THEN
                 CREATE ROLE {group} NOLOGIN;
               END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {admin_lit}) THEN
                 CREATE ROLE {admin} LOGIN CREATEROLE;
               END IF;
             END $$;
             ALTER ROLE {admin} WITH LOGIN CREATEROLE NOSUPERUSER PASSWORD {password};
             GRANT CONNECT ON DATABASE {database} TO {group};
             GRANT USAGE ON SCHEMA public TO {group};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {group};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {group};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
               GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {group};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
               GRANT USAGE, SELECT ON SEQUENCES TO {group};",
            group_lit = quote_literal(&engine.group_role),
            admin_lit = quote_literal(&engine.admin_role),
            password = quote_literal(&admin_password),
            database = quote_ident(&engine.database),
        );
        db.batch_execute(&sql).await.pg_context(|| {
            format!(
                "creating roles {} and {}",
                engine.group_role, engine.admin_role
            )
        })?;

        self.mount(&engine.mount, "database", json!({})).await?;
        let node = cluster.node(primary);
        self.call(
            Method::POST,
            &format!("{}/config/{}", engine.mount, engine.connection),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{}?sslmode=disable",
                    node.port(),
                    engine.database
                ),
                "username": engine.admin_role,
                "password": admin_password,
                "allowed_roles": [engine.role],
                "verify_connection": true,
            })),
        )
        .await?;
        let creation = format!(
            "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' \
             CONNECTION LIMIT {limit} IN ROLE {group};",
            limit = engine.connection_limit,
        );
        let revocation =
            format!("REVOKE {group} FROM \"{{{{name}}}}\"; DROP ROLE IF EXISTS \"{{{{name}}}}\";");
        let renew = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";
        self.call(
            Method::POST,
            &format!("{}/roles/{}", engine.mount, engine.role),
            Some(json!({
                "db_name": engine.connection,
                "creation_statements": [creation],
                "revocation_statements": [revocation],
                "renew_statements": [renew],
                "default_ttl": format!("{}s", engine.default_ttl.as_secs()),
                "max_ttl": format!("{}s", engine.max_ttl.as_secs()),
            })),
        )
        .await
        .map(drop)
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.get_mut().take() {
            process.kill();
        }
    }
}

/// A plain HTTP client (no proxy, 10 s timeout) that works whatever TLS
/// feature of reqwest the build unified: with `rustls-no-provider`, ring
/// is installed as the process's provider first.
pub fn http_client() -> Result<reqwest::Client> {
    // reqwest may be built with `rustls-no-provider` (feature unification
    // with vault-client): it then panics without a process-wide provider.
    // An error means one is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| Error::Http {
            path: "(client)".into(),
            source,
        })
}

/// One API call to `url` (the API path `path`, for errors) with `token`
/// (none when empty). Returns the JSON body, or `None` for an empty (204)
/// answer; an error status is an [`Error::Bao`].
pub(crate) async fn api_call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Option<Value>> {
    let mut request = http.request(method.clone(), url);
    if !token.is_empty() {
        request = request.header("X-Vault-Token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|source| Error::Http {
        path: path.to_owned(),
        source,
    })?;
    let status = response.status();
    let text = response.text().await.map_err(|source| Error::Http {
        path: path.to_owned(),
        source,
    })?;
    if !status.is_success() {
        return Err(Error::Bao {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
            body: text,
        });
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Usage(format!("{path} answered with invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1, written to `dir`.
    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_listener_beside_the_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let bao = OpenBao::builder()
            .tls(&cert, &key)
            .start()
            .await
            .expect("OpenBao starts with a TLS listener");
        let tls_addr = bao.tls_addr().expect("a TLS address").to_owned();
        assert!(tls_addr.starts_with("https://127.0.0.1:"), "{tls_addr}");
        // The plain listener still serves the setup helpers.
        bao.enable_kv2("secret").await.unwrap();
        // The TLS port speaks TLS only: Go's server answers a plain HTTP
        // request there with 400.
        let plain = tls_addr.replacen("https://", "http://", 1);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let answer = http
            .get(format!("{plain}/v1/sys/health"))
            .send()
            .await
            .expect("the TLS port accepts connections");
        assert_eq!(answer.status(), 400);
        let text = answer.text().await.unwrap();
        assert!(text.contains("HTTPS"), "{text}");
        // Same TLS port after a restart.
        bao.restart().await.unwrap();
        assert_eq!(bao.tls_addr(), Some(tls_addr.as_str()));
        let again = http
            .get(format!("{plain}/v1/sys/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 400);
    }
}
