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
