//! The workspace migrations against a real PostgreSQL.

use testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_constrain_stores() {
    let cluster = PgCluster::start(0).await.expect("cluster starts");
    cluster.create_database("stores").await.unwrap();
    let mut db = cluster.admin_db(cluster.primary(), "stores").await.unwrap();

    // Every file in migrations/ is applied, in version order.
    let mut expected: Vec<i32> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let version = name.strip_prefix('V')?.split("__").next()?.parse().ok()?;
                name.ends_with(".sql").then_some(version)
            })
            .collect();
    expected.sort_unstable();
    let first = testkit::migrations::apply(&mut db).await.unwrap();
    assert_eq!(first, expected);
    assert_eq!(first.first(), Some(&1));
    assert!(
        testkit::migrations::apply(&mut db)
            .await
            .unwrap()
            .is_empty(),
        "a second run applies nothing"
    );

    let row = db
        .query_one(
            "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), 'Main street', 'PROVISIONING')
             RETURNING config::text, version, created_at = updated_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "{}");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row.get::<_, bool>(2));

    for (name, status) in [
        ("ab", "ACTIVE"),
        (&"x".repeat(101)[..], "ACTIVE"),
        ("Good name", "PAUSED"),
    ] {
        let err = db
            .execute(
                "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), $1, $2)",
                &[&name, &status],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{name:?} {status}"
        );
    }
}
