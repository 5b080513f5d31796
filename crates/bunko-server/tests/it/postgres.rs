//! `bunko serve` on PostgreSQL, as real processes: two servers with data dirs of their own
//! share one database (accounts, projects, keys, jobs) and a restart keeps everything.

use crate::it::support::{Server, admin_credentials, client};
use serde_json::{Value, json};

const SECRET: &str = "a-shared-signing-key-for-both-replicas-0123456789";

async fn login(s: &Server, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgresql_database_and_a_restart_keeps_it() {
    let Some(db) = bunko_store::testing::PgDatabase::create().await else {
        return;
    };
    let env = [
        ("BUNKO__DATABASE__URL", db.url.as_str()),
        ("BUNKO__AUTH__JWT_SECRET", SECRET),
        ("BUNKO__LOCAL__EMBEDDER", "none"),
    ];
    let mut a = Server::start(&[], &env);
    let (email, password) = admin_credentials(&a.data_dir);
    let token = a.token();
    let ready: Value = client()
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["components"]["database"]["detail"], "postgres",
        "{ready:#}"
    );

    // A project made through the first server…
    let r = client()
        .post(a.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "Shared laws"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // …is seen by a second one with a data dir of its own: same administrator (no second
    // "first admin" is made), same project, and the first server's token is valid there
    // (one signing key, one session table).
    let b = Server::start(&[], &env);
    assert!(
        !b.data_dir.join("initial-admin-password").exists(),
        "the second server found the first one's administrator"
    );
    let listed: Value = client()
        .get(b.url("/api/v1/projects"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["slug"] == "shared-laws"),
        "{listed:#}"
    );
    assert_eq!(login(&b, &email, &password).await.status(), 200);
    assert_eq!(login(&b, &email, "wrong password").await.status(), 401);

    // A restart of the first server: everything is still there.
    a.stop();
    let a2 = Server::start_in(a.data_dir.parent().unwrap(), &a.data_dir, &[], &env);
    let r = login(&a2, &email, &password).await;
    assert_eq!(r.status(), 200);
    let again: Value = client()
        .get(a2.url("/api/v1/projects/shared-laws"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["name"], "Shared laws", "{again:#}");
}

/// Hybrid search with the index in PostgreSQL (tsvector of bunko's tokens + pgvector) and the
/// real embedding model: both halves answer, permissions and scopes hold, the start-up check
/// repairs lost rows, and `bunko index rebuild` refills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_with_the_index_in_postgresql() {
    use crate::it::documents::{file, ids, start};
    use std::time::Duration;
    if !crate::it::support::model_installed("multilingual-e5-small") {
        return;
    }
    let Some(db) = bunko_store::testing::PgDatabase::create().await else {
        return;
    };
    let url = db.url.clone();
    let d = start(move |c| {
        c.database.url = Some(bunko_core::config::DatabaseUrl::new(url));
        c.search.backend = "postgres".into();
        c.local.embedder = "multilingual-e5-small".into();
    })
    .await;
    let up = d
        .upload(&[
            file(
                "labour.md",
                "# 労働基準\n\n第三十四条 使用者は、労働時間が六時間を超える場合においては少くとも四十五分の休憩時間を労働時間の途中に与えなければならない。\n"
                    .as_bytes()
                    .to_vec(),
            ),
            file(
                "cake.md",
                b"# Baking\n\nWhisk the eggs with sugar, fold in the flour and bake the sponge cake for thirty minutes.\n".to_vec(),
            ),
        ])
        .await
        .json();
    let ids = ids(&up);
    let done = d.settle(&ids, Duration::from_secs(180)).await;
    for doc in &done {
        assert_eq!(doc["status"], "ready", "{doc:#}");
    }
    let pg = d.state.pg_index.clone().unwrap();
    assert!(
        pg.search.vectors_on(),
        "{:?}",
        pg.search.vector_unavailable()
    );

    // Hybrid: both halves answer from PostgreSQL; the Japanese query finds the law by its
    // words and bigrams, and the vector half agrees.
    let s = d
        .get("/api/v1/search?q=%E4%BC%91%E6%86%A9%E6%99%82%E9%96%93&mode=hybrid&k=2")
        .await
        .json();
    assert_eq!(s["legs"]["keyword"]["status"], "ok", "{s:#}");
    assert_eq!(s["legs"]["vector"]["status"], "ok", "{s:#}");
    assert_eq!(s["results"][0]["document_id"], ids[0].as_str(), "{s:#}");
    assert_eq!(s["results"][0]["keyword_rank"], 1, "{s:#}");
    assert!(
        s["results"][0]["snippet"].as_str().unwrap().contains("<b>"),
        "{s:#}"
    );
    // A query sharing no word with the cake recipe: only the vector half can find it.
    let s = d
        .get("/api/v1/search?q=how%20to%20make%20a%20dessert&mode=vector&k=1")
        .await
        .json();
    assert_eq!(s["results"][0]["document_id"], ids[1].as_str(), "{s:#}");
    assert!(
        s["results"][0]["vector_score"].as_f64().unwrap() > 0.5,
        "{s:#}"
    );
    // A filter is a clause of both halves' queries.
    let r = d
        .post_json(
            "/api/v1/search",
            &format!(
                "{{\"q\": \"cake\", \"mode\": \"hybrid\", \"filters\": {{\"document_ids\": [\"{}\"]}}}}",
                ids[0]
            ),
        )
        .await
        .json();
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] == ids[0].as_str()),
        "{r:#}"
    );

    // Rows lost from the index are put back by the start-up check.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("DELETE FROM search_vectors WHERE document_id = $1")
        .bind(&ids[0])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM search_chunks WHERE document_id = $1")
        .bind(&ids[1])
        .execute(&pool)
        .await
        .unwrap();
    let report = d.state.ingest.check_consistency().await.unwrap();
    assert_eq!((report.documents, report.reindexed), (2, 2), "{report:?}");
    let counts = pg.document_counts().await.unwrap();
    for (i, doc) in ids.iter().enumerate() {
        let n = done[i]["chunk_count"].as_u64().unwrap() as usize;
        assert_eq!(counts[doc], (n, n), "{doc}");
    }
    // `bunko index rebuild` refills it from the database (a CLI process beside the server).
    sqlx::query("TRUNCATE search_chunks, search_vectors")
        .execute(&pool)
        .await
        .unwrap();
    let out = crate::it::support::bunko_env(
        d.state.config.data_dir.parent().unwrap(),
        &[
            "--data-dir",
            d.state.config.data_dir.to_str().unwrap(),
            "index",
            "rebuild",
        ],
        &[
            ("BUNKO__DATABASE__URL", &db.url),
            ("BUNKO__SEARCH__BACKEND", "postgres"),
            ("BUNKO__LOCAL__EMBEDDER", "multilingual-e5-small"),
        ],
    );
    let text = crate::it::support::text(&out.stdout) + &crate::it::support::text(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("refilled the search index in PostgreSQL: 2 documents"),
        "{text}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM search_vectors")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n >= 2);
    pool.close().await;
}
