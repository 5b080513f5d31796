//! The port contract suite on a real PostgreSQL server (see `scripts/services`), one fresh
//! database per test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod contract {
    bunko_store::contract_tests!(bunko_store::testing::pg_fresh());
}

/// What only a shared server can show: several processes (here, several pools — each replica
/// has its own) starting, migrating and leasing at the same time.
mod replicas {
    use bunko_core::jobs::NewJob;
    use bunko_core::ports::{JobQueue, MetaStore};
    use bunko_store::OpenError;
    use bunko_store::postgres::PgStore;
    use bunko_store::testing::PgDatabase;
    use serde_json::json;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_migrate_once_and_lease_each_job_once() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        // Four replicas open the empty database at once: one migrates, the others wait.
        let opens = (0..4).map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::open(&url, "test", 4).await })
        });
        let mut stores: Vec<Arc<PgStore>> = Vec::new();
        for h in opens {
            stores.push(Arc::new(h.await.unwrap().expect("every replica opens")));
        }
        assert_eq!(
            stores[0].schema_version().await.unwrap(),
            bunko_store::postgres::latest()
        );
        for i in 0..200 {
            stores[i % 4]
                .enqueue(NewJob::new("work", "k", json!({ "i": i })))
                .await
                .unwrap();
        }
        // Each replica runs three workers that lease until the queue is empty.
        let mut workers = Vec::new();
        for (r, s) in stores.iter().enumerate() {
            for w in 0..3 {
                let s = s.clone();
                workers.push(tokio::spawn(async move {
                    let me = format!("r{r}w{w}");
                    let mut got = Vec::new();
                    while let Some(j) = s.lease("work", &me, Duration::from_secs(30)).await.unwrap()
                    {
                        assert!(s.complete(j.id, &me, None).await.unwrap());
                        got.push(j.id);
                    }
                    got
                }));
            }
        }
        let mut seen = HashSet::new();
        let mut per_worker = Vec::new();
        for w in workers {
            let got = w.await.unwrap();
            per_worker.push(got.len());
            for id in got {
                assert!(seen.insert(id), "job {id} leased twice");
            }
        }
        assert_eq!(seen.len(), 200, "every job leased once");
        assert!(
            per_worker.iter().filter(|n| **n > 0).count() > 1,
            "the work was shared: {per_worker:?}"
        );
        for s in &stores {
            s.close().await;
        }
    }

    #[tokio::test]
    async fn another_applications_database_is_refused_and_left_alone() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id int primary key, total numeric)")
            .execute(&pool)
            .await
            .unwrap();
        let err = PgStore::open(&db.url, "theirs", 2).await.err().unwrap();
        assert!(err.to_string().contains("none of bunko's"), "{err}");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 1, "nothing was created");
        pool.close().await;
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let s = PgStore::open(&db.url, "db", 2).await.unwrap();
        s.close().await;
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO bunko_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let err = PgStore::open(&db.url, "db", 2).await.err().unwrap();
        assert!(
            matches!(err, OpenError::NewerSchema { found: 999, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        // A port nothing listens on (the test server's port + 1 is not used by the suite).
        let err = PgStore::open(
            "postgres://bunko@127.0.0.1:1/bunko",
            "postgres://bunko@127.0.0.1:1/bunko",
            2,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(err, OpenError::Io { .. }) && err.to_string().contains("127.0.0.1:1"),
            "{err}"
        );
    }
}

/// The search index in PostgreSQL: tsvector of the caller's tokens + pgvector.
mod search {
    use bunko_store::postgres::search::{IndexedChunk, KeywordQuery, PgSearch, Scope};
    use bunko_store::testing::PgDatabase;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|t| (*t).to_owned()).collect()
    }

    fn chunk(id: &str, text: &str, terms: &[&str], v: [f32; 3]) -> IndexedChunk {
        IndexedChunk {
            id: id.into(),
            text: text.into(),
            text_terms: s(terms),
            words: Vec::new(),
            vector: Some(v.to_vec()),
        }
    }

    fn q(plain: &[&str]) -> KeywordQuery {
        KeywordQuery {
            plain: s(plain),
            bigram_weight: 1.0,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn keyword_and_vector_halves_filter_inside_the_query() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let idx = PgSearch::open(&db.url, 4, Some((3, "model-a")))
            .await
            .unwrap();
        assert!(idx.vectors_on(), "{:?}", idx.vector_unavailable());
        idx.replace_document(
            "d1",
            "p1",
            "Zoo",
            &s(&["zoo"]),
            &[
                chunk(
                    "d1:0",
                    "irregular time series",
                    &["irregular", "time", "seri"],
                    [1.0, 0.0, 0.0],
                ),
                chunk(
                    "d1:1",
                    "time time time",
                    &["time", "time", "time"],
                    [0.0, 1.0, 0.0],
                ),
            ],
        )
        .await
        .unwrap();
        idx.replace_document(
            "d2",
            "p2",
            "Other",
            &s(&["other"]),
            &[chunk("d2:0", "irregular", &["irregular"], [0.9, 0.1, 0.0])],
        )
        .await
        .unwrap();
        let p1 = s(&["p1"]);
        let all = Scope::default();
        let hits = idx.keyword(&p1, &all, &q(&["time"]), 10).await.unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            vec!["d1:1", "d1:0"],
            "more occurrences rank higher"
        );
        assert_eq!(hits[0].title, "Zoo");
        // The project filter is part of the query: p2's chunk never comes back to p1.
        let hits = idx
            .keyword(&p1, &all, &q(&["irregular"]), 10)
            .await
            .unwrap();
        assert_eq!(hits.len(), 1);
        let both = s(&["p1", "p2"]);
        assert_eq!(
            idx.keyword(&both, &all, &q(&["irregular"]), 10)
                .await
                .unwrap()
                .len(),
            2
        );
        // Title tokens count.
        assert_eq!(
            idx.keyword(&both, &all, &q(&["zoo"]), 10)
                .await
                .unwrap()
                .len(),
            2
        );
        let only_d2 = Scope {
            only: Some(s(&["d2"])),
            except: Vec::new(),
        };
        let not_d2 = Scope {
            only: None,
            except: s(&["d2"]),
        };
        assert_eq!(
            idx.keyword(&both, &only_d2, &q(&["irregular"]), 10)
                .await
                .unwrap()[0]
                .id,
            "d2:0"
        );
        assert_eq!(
            idx.keyword(&both, &not_d2, &q(&["irregular"]), 10)
                .await
                .unwrap()[0]
                .id,
            "d1:0"
        );
        assert!(
            idx.keyword(&both, &all, &q(&[]), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            idx.keyword(&both, &all, &q(&["o'k", "a\\b"]), 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Vectors: nearest first, filtered by project and scope.
        let v = idx.vector(&both, &all, &[1.0, 0.0, 0.0], 3).await.unwrap();
        assert_eq!(v[0].1, "d1:0");
        assert!((v[0].2 - 1.0).abs() < 1e-5);
        assert_eq!(v[1].1, "d2:0");
        let v = idx.vector(&p1, &all, &[1.0, 0.0, 0.0], 3).await.unwrap();
        assert!(v.iter().all(|(p, _, _)| p == "p1"));
        let v = idx
            .vector(&both, &not_d2, &[0.9, 0.1, 0.0], 1)
            .await
            .unwrap();
        assert_eq!(v[0].1, "d1:0");

        assert_eq!(idx.counts().await.unwrap(), (3, 3));
        let per = idx.document_counts().await.unwrap();
        assert_eq!(per["d1"], (2, 2));
        // Replacing a document swaps its chunks; deleting removes them from both halves.
        idx.replace_document(
            "d1",
            "p1",
            "Zoo",
            &s(&["zoo"]),
            &[chunk("d1:0", "x", &["x"], [0.0, 0.0, 1.0])],
        )
        .await
        .unwrap();
        assert_eq!(idx.document_counts().await.unwrap()["d1"], (1, 1));
        idx.delete_document("d1").await.unwrap();
        assert_eq!(idx.counts().await.unwrap(), (1, 1));
        assert!(idx.get("d1:0").await.unwrap().is_none());
        assert_eq!(idx.get("d2:0").await.unwrap().unwrap().text, "irregular");
        idx.close().await;

        // Another model's vectors are never mixed: that half says why and how to fix it.
        let other = PgSearch::open(&db.url, 2, Some((3, "model-b")))
            .await
            .unwrap();
        let why = other.vector_unavailable().unwrap().to_owned();
        assert!(why.contains("bunko index rebuild"), "{why}");
        assert!(
            other
                .vector(&both, &all, &[1.0, 0.0, 0.0], 1)
                .await
                .is_err()
        );
        // The keyword half still works.
        assert_eq!(
            other
                .keyword(&both, &all, &q(&["irregular"]), 5)
                .await
                .unwrap()
                .len(),
            1
        );
        other.clear(true).await.unwrap();
        other.close().await;
        let rebuilt = PgSearch::open(&db.url, 2, Some((3, "model-b")))
            .await
            .unwrap();
        assert!(rebuilt.vectors_on());
        assert_eq!(rebuilt.counts().await.unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn filtered_vector_search_still_finds_k_allowed_neighbours() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let idx = PgSearch::open(&db.url, 4, Some((3, "m"))).await.unwrap();
        // 300 chunks of project "big" right next to the query, 5 of "small" further away:
        // a post-filtered top-k would find none of "small".
        let near: Vec<IndexedChunk> = (0..300)
            .map(|i| chunk(&format!("b:{i}"), "b", &["b"], [1.0, 0.001 * i as f32, 0.0]))
            .collect();
        idx.replace_document("b", "big", "B", &[], &near)
            .await
            .unwrap();
        let far: Vec<IndexedChunk> = (0..5)
            .map(|i| chunk(&format!("s:{i}"), "s", &["s"], [0.0, 1.0, 0.1 * i as f32]))
            .collect();
        idx.replace_document("s", "small", "S", &[], &far)
            .await
            .unwrap();
        let hits = idx
            .vector(&s(&["small"]), &Scope::default(), &[1.0, 0.0, 0.0], 5)
            .await
            .unwrap();
        assert_eq!(hits.len(), 5, "{hits:?}");
    }

    /// A long query's common tokens do not make PostgreSQL rank most of the table: once
    /// ANALYZE has counted the tokens, rows are found by the query's rarest tokens (within the
    /// candidate budget) and ranked by all of them. With the budget off, every row holding
    /// any token is ranked.
    #[tokio::test]
    async fn keyword_rows_are_found_by_the_rarest_tokens() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let idx = PgSearch::open(&db.url, 4, None).await.unwrap();
        // 400 chunks hold "common"; one of every ten also "mid"; one chunk holds "rare" (and
        // "common").
        let mut chunks: Vec<IndexedChunk> = (0..400)
            .map(|i| {
                let mut terms = vec!["common".to_owned(), format!("u{i}")];
                if i % 10 == 0 {
                    // Long chunks: length normalisation ranks them low.
                    terms.push("mid".into());
                    terms.extend((0..60).map(|j| format!("f{i}x{j}")));
                }
                IndexedChunk {
                    id: format!("d:{i}"),
                    text: terms.join(" "),
                    text_terms: terms,
                    words: Vec::new(),
                    vector: None,
                }
            })
            .collect();
        chunks.push(chunk(
            "d:rare",
            "rare common",
            &["rare", "common"],
            [0.0; 3],
        ));
        idx.replace_document("d", "p1", "", &[], &chunks)
            .await
            .unwrap();
        // And a short chunk of only "common": length-normalised, it outranks the long "mid" ones.
        idx.replace_document(
            "short",
            "p1",
            "",
            &[],
            &[chunk("short:0", "common", &["common"], [0.0; 3])],
        )
        .await
        .unwrap();
        let query = q(&["common", "mid", "rare"]);
        // Before ANALYZE there are no statistics: every row holding a token is ranked.
        idx.set_candidate_rows(10);
        let unknown = idx
            .keyword(&s(&["p1"]), &Scope::default(), &query, 1000)
            .await
            .unwrap();
        assert_eq!(unknown.len(), 402);
        idx.analyze().await.unwrap();
        let ids = |hits: Vec<bunko_store::postgres::search::PgHit>| -> Vec<String> {
            hits.into_iter().map(|h| h.id).collect()
        };
        // Budget 50 rows: "rare" (1 row) and "mid" (40) are searched; "common" (402) is not,
        // so the short chunk of only "common" is not ranked.
        idx.set_candidate_rows(50);
        let pruned = ids(idx
            .keyword(&s(&["p1"]), &Scope::default(), &query, 10)
            .await
            .unwrap());
        assert_eq!(pruned.len(), 10, "{pruned:?}");
        assert_eq!(pruned[0], "d:rare");
        let mid_rows = |ids: &[String]| {
            ids.iter().all(|id| {
                id.strip_prefix("d:")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n % 10 == 0)
            })
        };
        assert!(
            mid_rows(&pruned[1..]),
            "only rows holding a rare token: {pruned:?}"
        );
        // Budget 10: only "rare" (1 row) — too few for 5 hits, so the filter widens to "mid".
        idx.set_candidate_rows(10);
        let widened = ids(idx
            .keyword(&s(&["p1"]), &Scope::default(), &query, 5)
            .await
            .unwrap());
        assert_eq!(widened.len(), 5, "{widened:?}");
        assert_eq!(widened[0], "d:rare");
        assert!(mid_rows(&widened[1..]), "{widened:?}");
        // No budget: every chunk holding any of the tokens is ranked.
        idx.set_candidate_rows(0);
        let all = ids(idx
            .keyword(&s(&["p1"]), &Scope::default(), &query, 1000)
            .await
            .unwrap());
        assert_eq!(all.len(), 402);
        assert_eq!(all[0], "d:rare");
        assert_eq!(
            all[1], "short:0",
            "ranking every row, the short chunk of one common token comes second"
        );
    }
}
