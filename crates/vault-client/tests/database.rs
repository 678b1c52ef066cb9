//! Dynamic database credentials against a real OpenBao and a real
//! PostgreSQL: the users log in, leases are renewed until their max TTL and
//! rotated before they expire, a pool under load never fails across
//! rotations, and shutdown revokes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::{DatabaseEngine, OpenBao, PgCluster};
use tokio_postgres::NoTls;
use vault_client::{Client, ExposeSecret, LeaseEvent, LeaseOptions};

struct Stack {
    cluster: PgCluster,
    bao: OpenBao,
    client: Client,
}

/// PostgreSQL with the migrations, OpenBao with the database engine issuing
/// leases of `ttl` up to `max_ttl`.
async fn stack(ttl: Duration, max_ttl: Duration) -> Stack {
    let (cluster, bao) = tokio::join!(PgCluster::start(0), OpenBao::start());
    let (cluster, bao) = (cluster.expect("PostgreSQL"), bao.expect("OpenBao"));
    cluster.create_database("stores").await.unwrap();
    let mut db = cluster.admin_db(cluster.primary(), "stores").await.unwrap();
    testkit::migrations::apply(&mut db).await.unwrap();
    let engine = DatabaseEngine {
        default_ttl: ttl,
        max_ttl,
        ..DatabaseEngine::default()
    };
    bao.configure_database(&cluster, &engine).await.unwrap();
    let client = common::root_client(&bao).await;
    Stack {
        cluster,
        bao,
        client,
    }
}

async fn login(
    stack: &Stack,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = stack
        .cluster
        .node(stack.cluster.primary())
        .config(user, password, "stores")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn role_exists(stack: &Stack, user: &str) -> bool {
    let admin = stack.cluster.admin(stack.cluster.primary()).await.unwrap();
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_credentials_log_in_renew_rotate_and_revoke() {
    let stack = stack(Duration::from_secs(4), Duration::from_secs(10)).await;
    let _keep = &stack.bao;

    // One read: a real user that logs in with DML rights.
    let creds = stack
        .client
        .database("database")
        .creds("store-service")
        .await
        .unwrap();
    assert!(!format!("{creds:?}").contains(creds.password.expose_secret()));
    assert_eq!(creds.lease.duration, Duration::from_secs(4));
    let pg = login(&stack, &creds.username, creds.password.expose_secret())
        .await
        .expect("the issued user logs in");
    pg.execute(
        "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), 'from vault-client', 'ACTIVE')",
        &[],
    )
    .await
    .unwrap();
    stack.client.revoke_lease(&creds.lease.id).await.unwrap();
    assert!(
        !role_exists(&stack, &creds.username).await,
        "revocation drops the user"
    );

    // The lease manager: renew, then rotate before expiry, twice.
    let builder = stack
        .client
        .database("database")
        .lease_manager("store-service")
        .options(LeaseOptions {
            revoke_on_shutdown: true,
            drain_delay: Duration::from_millis(200),
            ..LeaseOptions::default()
        });
    let mut events = builder.subscribe();
    let manager = builder.start().await.unwrap();
    let mut credentials = manager.credentials();
    let mut users = vec![credentials.borrow().username.clone()];
    let rotated = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            credentials.changed().await.unwrap();
            let current = credentials.borrow_and_update().clone();
            if current.username != *users.last().unwrap() {
                assert_eq!(current.generation as usize, users.len() + 1);
                // The new user can log in at once.
                let pg = login(&stack, &current.username, current.password.expose_secret())
                    .await
                    .expect("the rotated user logs in");
                pg.query_one("SELECT count(*) FROM stores", &[])
                    .await
                    .unwrap();
                users.push(current.username);
                if users.len() == 3 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        rotated.is_ok(),
        "two rotations within 30 s; users: {users:?}"
    );
    let mut kinds = BTreeSet::new();
    while let Ok(event) = events.try_recv() {
        kinds.insert(match event {
            LeaseEvent::Created { .. } => "created",
            LeaseEvent::Renewed { .. } => "renewed",
            LeaseEvent::Expiring { .. } => "expiring",
            LeaseEvent::Rotated { .. } => "rotated",
            LeaseEvent::Failed { .. } => "failed",
            _ => "other",
        });
    }
    for kind in ["created", "renewed", "expiring", "rotated"] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    assert!(!kinds.contains("failed"), "{kinds:?}");

    // Shutdown: after the drain delay, the current lease is revoked.
    let last = manager.current().username;
    assert!(role_exists(&stack, &last).await);
    manager.shutdown().await.unwrap();
    assert!(!role_exists(&stack, &last).await, "revoked on shutdown");
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_sees_no_error_across_two_rotations() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use vault_client::pool::{deadpool_postgres::ManagerConfig, pool_builder};

    let stack = stack(Duration::from_secs(4), Duration::from_secs(10)).await;
    let manager = stack
        .client
        .database("database")
        .lease_manager("store-service")
        .start()
        .await
        .unwrap();
    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(stack.cluster.node(stack.cluster.primary()).port())
        .dbname("stores");
    let pool = pool_builder(pg, NoTls, manager.credentials(), ManagerConfig::default())
        .max_size(4)
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen_users = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (pool, stop, queries, errors, seen_users) = (
            pool.clone(),
            Arc::clone(&stop),
            Arc::clone(&queries),
            Arc::clone(&errors),
            Arc::clone(&seen_users),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let result = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    client
                        .execute(
                            "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), 'load', 'ACTIVE')",
                            &[],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let row = client
                        .query_one("SELECT current_user::text", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<String, String>(row.get(0))
                }
                .await;
                match result {
                    Ok(user) => {
                        seen_users.lock().unwrap().insert(user);
                    }
                    Err(e) => errors.lock().unwrap().push(e),
                }
                queries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let mut credentials = manager.credentials();
    let rotated = tokio::time::timeout(Duration::from_secs(30), async {
        while credentials.borrow().generation < 3 {
            credentials.changed().await.unwrap();
        }
        // Keep querying a little past the second rotation, until the old
        // user's lease has expired and Vault dropped it.
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(rotated.is_ok(), "two rotations within 30 s");
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let queries = queries.load(Ordering::SeqCst);
    assert!(queries > 100, "{queries} queries");
    let users = seen_users.lock().unwrap().clone();
    assert!(
        users.len() >= 3,
        "connections used every generation: {users:?}"
    );
    // Every connection the pool hands out now (all four slots at once, so
    // idle ones are recycled) uses the current user: connections opened with
    // an older generation were retired. Retried if a rotation lands during
    // the check.
    let mut checked = false;
    for _ in 0..3 {
        let before = manager.current();
        let mut held = Vec::new();
        let mut users = BTreeSet::new();
        for _ in 0..4 {
            let client = pool.get().await.unwrap();
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            users.insert(row.get::<_, String>(0));
            held.push(client);
        }
        if manager.current().generation != before.generation {
            continue;
        }
        assert_eq!(users, BTreeSet::from([before.username.clone()]));
        checked = true;
        break;
    }
    assert!(checked, "credentials kept rotating during the check");
    drop(manager);
}
