//! "Cost per page must not grow with the table size": the plan of every
//! variant of the list-page query, on 20 000 rows, is an index range scan
//! under a `LIMIT`: no sequential scan, no sort.

use serde_json::Value;
use store_service::storage::list_sql;
use testkit::PgCluster;
use time::OffsetDateTime;
use uuid::Uuid;

/// Every node type in `plan`, depth first, with the index name of scans.
fn nodes(plan: &Value, out: &mut Vec<(String, Option<String>)>) {
    out.push((
        plan["Node Type"].as_str().unwrap_or_default().to_owned(),
        plan["Index Name"].as_str().map(str::to_owned),
    ));
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_page_is_an_index_range_scan_under_a_limit() {
    let pg = PgCluster::start(0).await.unwrap();
    pg.create_database("stores").await.unwrap();
    store_service::migrate::run(&pg.superuser_url(pg.primary(), "stores"))
        .await
        .unwrap();
    let db = pg.admin_db(pg.primary(), "stores").await.unwrap();
    db.batch_execute(
        "INSERT INTO stores (id, name, status, created_at, updated_at) \
         SELECT gen_random_uuid(), 'Store ' || i, \
                (ARRAY['PROVISIONING', 'ACTIVE', 'DECOMMISSIONED'])[1 + i % 3], \
                now() - (i || ' seconds')::interval, now() \
         FROM generate_series(1, 20000) AS i; \
         ANALYZE stores;",
    )
    .await
    .unwrap();
    // A cursor in the middle of the table, as a client paging through has.
    let row = db
        .query_one(
            "SELECT created_at, id FROM stores ORDER BY created_at, id OFFSET 10000 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (at, id): (OffsetDateTime, Uuid) = (row.get(0), row.get(1));
    let fetch: i64 = 51;
    let status = "ACTIVE";

    for (cursor, filter) in [(false, false), (false, true), (true, false), (true, true)] {
        let sql = format!("EXPLAIN (FORMAT JSON) {}", list_sql(cursor, filter));
        let explained = match (cursor, filter) {
            (false, false) => db.query_one(&sql, &[&fetch]).await,
            (false, true) => db.query_one(&sql, &[&status, &fetch]).await,
            (true, false) => db.query_one(&sql, &[&at, &id, &fetch]).await,
            (true, true) => db.query_one(&sql, &[&status, &at, &id, &fetch]).await,
        }
        .unwrap();
        let plan: Value = explained.get(0);
        let root = &plan[0]["Plan"];
        let mut found = Vec::new();
        nodes(root, &mut found);
        let context = format!("cursor {cursor}, status {filter}: {found:?}");
        assert_eq!(found[0].0, "Limit", "{context}");
        let index = if filter {
            "stores_status_created_at_id"
        } else {
            "stores_created_at_id"
        };
        assert!(
            found
                .iter()
                .any(|(node, name)| node == "Index Scan" && name.as_deref() == Some(index)),
            "{context}"
        );
        for banned in ["Seq Scan", "Sort", "Incremental Sort", "Bitmap Heap Scan"] {
            assert!(found.iter().all(|(node, _)| node != banned), "{context}");
        }
    }

    // The filtered page after a cursor (its row comparison spans the
    // status index) returns what the plain condition does.
    let page: Vec<Uuid> = db
        .query(&list_sql(true, true), &[&status, &at, &id, &fetch])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected: Vec<Uuid> = db
        .query(
            "SELECT id FROM stores WHERE status = $1 AND (created_at, id) > ($2, $3) \
             ORDER BY created_at, id LIMIT $4",
            &[&status, &at, &id, &fetch],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(page.len(), 51);
    assert_eq!(page, expected);
}
