//! The authorization matrix: every route the router serves × every kind of caller. The route
//! list comes from the router's own table, so a new route without an entry here fails.

use axum::body::Body;
use axum::http::{Method, Request};
use bunko_core::accounts::ClientInfo;
use bunko_core::config::Config;
use bunko_core::identity::{GlobalRole, ProjectRole, Scope};
use bunko_server::app::{Runtime, router};
use std::collections::BTreeMap;
use std::time::Duration;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anon,
    Outsider,
    Viewer,
    Editor,
    Owner,
    Admin,
    /// A key of the project's owner, bound to the project, with one scope.
    Key(Scope),
    /// A key with every scope, bound to another project.
    OtherProjectKey,
}

/// What a cell must answer. `Hidden` = 404 because the project is not visible to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exp {
    S(u16),
    Hidden,
}
use Exp::{Hidden, S};

fn is_session(w: Who) -> bool {
    matches!(
        w,
        Who::Outsider | Who::Viewer | Who::Editor | Who::Owner | Who::Admin
    )
}

/// Keys with the admin scope, or sessions: who may manage keys, passwords, new projects.
fn manages(w: Who) -> bool {
    is_session(w) || matches!(w, Who::Key(Scope::Admin) | Who::OtherProjectKey)
}

fn project_read(w: Who) -> Exp {
    match w {
        Who::Anon => S(401),
        Who::Outsider | Who::OtherProjectKey => Hidden,
        Who::Viewer | Who::Editor | Who::Owner | Who::Admin | Who::Key(Scope::Read) => S(200),
        Who::Key(_) => S(403),
    }
}

/// A document of project P: invisible callers get a plain 404 (as for a document that does
/// not exist), visible ones without the scope 403.
fn document(w: Who, scope: Scope, ok: u16) -> Exp {
    let allowed = match scope {
        // Viewers may read, search and ask.
        Scope::Read | Scope::Search | Scope::Ask => {
            matches!(w, Who::Viewer | Who::Editor | Who::Owner | Who::Admin) || w == Who::Key(scope)
        }
        _ => matches!(w, Who::Editor | Who::Owner | Who::Admin) || w == Who::Key(scope),
    };
    match w {
        Who::Anon => S(401),
        Who::Outsider | Who::OtherProjectKey => S(404),
        _ if allowed => S(ok),
        _ => S(403),
    }
}

fn project_ingest(w: Who, ok: u16) -> Exp {
    project_scope(w, Scope::Ingest, ok)
}

/// Something of project P that needs `scope`: invisible callers see no project.
fn project_scope(w: Who, scope: Scope, ok: u16) -> Exp {
    match w {
        Who::Outsider | Who::OtherProjectKey => Hidden,
        _ => document(w, scope, ok),
    }
}

fn admin_only(w: Who, ok: u16) -> Exp {
    match w {
        Who::Anon => S(401),
        Who::Admin => S(ok),
        _ => S(403),
    }
}

/// The matrix. `None` = this route has no entry (the test fails, naming it).
fn expected(method: &Method, path: &str, w: Who) -> Option<Exp> {
    let authed = |ok: u16| if w == Who::Anon { S(401) } else { S(ok) };
    let manage = |ok: u16| match w {
        Who::Anon => S(401),
        _ if manages(w) => S(ok),
        _ => S(403),
    };
    let gateway = |ok: u16| match w {
        Who::Anon => S(401),
        Who::Key(s) if s != Scope::Gateway => S(403),
        _ => S(ok),
    };
    Some(match (method.as_str(), path) {
        ("GET", "/") => S(307),
        (
            "GET",
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" | "/docs/{asset}",
        ) => S(200),
        // Public; the test sends an invalid body so nothing changes and nobody is locked out.
        ("POST", "/api/v1/auth/login" | "/api/v1/auth/refresh") => S(422),
        ("POST", "/api/v1/auth/logout") => match w {
            Who::Anon => S(401),
            _ if is_session(w) => S(204),
            _ => S(422),
        },
        ("GET", "/api/v1/auth/me") => authed(200),
        ("POST", "/api/v1/auth/password") => manage(422),
        ("GET", "/api/v1/users") => admin_only(w, 200),
        ("POST", "/api/v1/users") => admin_only(w, 422),
        ("GET", "/api/v1/users/{id}") => admin_only(w, 200),
        ("PATCH", "/api/v1/users/{id}") => admin_only(w, 200),
        ("GET", "/api/v1/keys") => manage(200),
        ("POST", "/api/v1/keys") => manage(422),
        ("DELETE", "/api/v1/keys/{id}") => manage(404),
        ("GET", "/api/v1/audit") => admin_only(w, 200),
        // No `q` (GET) or an unknown field (POST): allowed callers reach validation.
        ("GET" | "POST", "/api/v1/search") => match w {
            Who::Anon => S(401),
            Who::Key(s) if s != Scope::Search => S(403),
            _ => S(if method == Method::GET { 400 } else { 422 }),
        },
        // Ask: the `ask` scope; the body sent has an unknown field, so allowed callers reach
        // validation.
        ("POST", "/api/v1/ask") => match w {
            Who::Anon => S(401),
            Who::Key(s) if s != Scope::Ask => S(403),
            _ => S(422),
        },
        // The gateway: the `gateway` scope, any project. An invalid body reaches validation.
        ("GET", "/api/v1/usage") => authed(200),
        ("GET", "/v1/models") => gateway(200),
        ("POST", "/v1/chat/completions" | "/v1/embeddings") => gateway(422),
        ("GET", "/api/tags" | "/api/version") => gateway(200),
        ("POST", "/api/show" | "/api/chat" | "/api/generate" | "/api/embed") => gateway(422),
        // JSON instead of multipart: allowed callers reach the content-type check.
        ("POST", "/api/v1/projects/{project}/documents") => project_ingest(w, 415),
        ("GET", "/api/v1/projects/{project}/documents") => project_read(w),
        ("GET", "/api/v1/documents/{id}" | "/api/v1/documents/{id}/original") => {
            document(w, Scope::Read, 200)
        }
        ("GET", "/api/v1/documents/{id}/pages/{n}") => document(w, Scope::Read, 200),
        // Tried on a fresh document per caller.
        ("DELETE", "/api/v1/documents/{id}") => document(w, Scope::Ingest, 204),
        // An unknown field: allowed callers reach validation.
        ("POST", "/api/v1/documents/{id}/reprocess") => document(w, Scope::Ingest, 422),
        // Summaries: made with `ask` (an unknown field: 422), read with `read` (none yet: 404).
        ("POST", "/api/v1/documents/{id}/summary") => document(w, Scope::Ask, 422),
        ("GET", "/api/v1/documents/{id}/summary") => document(w, Scope::Read, 404),
        ("GET", "/api/v1/schedules") => admin_only(w, 200),
        ("POST", "/api/v1/schedules") => admin_only(w, 422),
        ("GET" | "DELETE", "/api/v1/schedules/{name}" | "/api/v1/schedules/{name}/runs")
        | (
            "POST",
            "/api/v1/schedules/{name}/pause"
            | "/api/v1/schedules/{name}/resume"
            | "/api/v1/schedules/{name}/run",
        ) => admin_only(w, 404),
        ("GET", "/api/v1/sources") => admin_only(w, 200),
        // An unknown field: administrators reach validation.
        ("POST", "/api/v1/sources") => admin_only(w, 422),
        ("GET" | "DELETE", "/api/v1/sources/{name}") | ("POST", "/api/v1/sources/{name}/crawl") => {
            admin_only(w, 404)
        }
        ("GET", "/api/v1/documents/{id}/versions") => document(w, Scope::Read, 200),
        ("GET", "/api/v1/jobs") => admin_only(w, 200),
        ("POST", "/api/v1/jobs") => admin_only(w, 422),
        ("GET", "/api/v1/jobs/{id}") => admin_only(w, 404),
        ("POST", "/api/v1/jobs/{id}/retry" | "/api/v1/jobs/{id}/cancel") => admin_only(w, 404),
        ("GET", "/api/v1/projects") => authed(200),
        ("POST", "/api/v1/projects") => manage(422),
        ("GET", "/api/v1/projects/{project}" | "/api/v1/projects/{project}/members") => {
            project_read(w)
        }
        // Exercised on a fresh copy of P per caller, so P survives for the other cells.
        ("DELETE", "/api/v1/projects/{project}") => match w {
            Who::Anon => S(401),
            Who::Outsider | Who::OtherProjectKey => Hidden,
            Who::Owner | Who::Admin | Who::Key(Scope::Admin) => S(204),
            _ => S(403),
        },
        ("PUT" | "DELETE", "/api/v1/projects/{project}/members/{user}") => match w {
            Who::Anon => S(401),
            Who::Outsider | Who::OtherProjectKey => Hidden,
            Who::Owner | Who::Admin | Who::Key(Scope::Admin) => {
                S(if method == Method::PUT { 422 } else { 404 })
            }
            _ => S(403),
        },
        // Notes: read with `read`, written with `ingest` (editors). The note id does not
        // exist, so allowed callers get 404 there; bodies have an unknown field (422).
        ("GET", "/api/v1/projects/{project}/notes" | "/api/v1/projects/{project}/notes.bib") => {
            project_read(w)
        }
        (
            "POST",
            "/api/v1/projects/{project}/notes" | "/api/v1/projects/{project}/notes:generate",
        ) => project_ingest(w, 422),
        (
            "GET",
            "/api/v1/projects/{project}/notes/{note}"
            | "/api/v1/projects/{project}/notes/{note}/markdown",
        ) => project_scope(w, Scope::Read, 404),
        ("PATCH" | "DELETE", "/api/v1/projects/{project}/notes/{note}") => project_ingest(w, 404),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_times_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.search.dictionary_cache = crate::it::support::DICT_CACHE.into();
    config.limits.enabled = false;
    let rt = Runtime::start(config, false).await.unwrap();
    let st = rt.state.clone();
    let acc = &st.accounts;
    let c = ClientInfo::default();
    let (admin_email, admin_pw) = rt.new_admin.clone().unwrap();
    let pw = "a long enough password 123";
    let mut users = BTreeMap::new();
    for (name, w) in [
        ("outsider", Who::Outsider),
        ("viewer", Who::Viewer),
        ("editor", Who::Editor),
        ("owner", Who::Owner),
    ] {
        let (u, _) = acc
            .create_user(
                None,
                &format!("{name}@x.org"),
                name,
                GlobalRole::Member,
                Some(pw),
                &c,
            )
            .await
            .unwrap();
        users.insert(w, u);
    }
    let p = bunko_core::projects::create(st.store.as_ref(), "Project P", None)
        .await
        .unwrap();
    let q = bunko_core::projects::create(st.store.as_ref(), "Project Q", None)
        .await
        .unwrap();
    for (w, role) in [
        (Who::Viewer, ProjectRole::Viewer),
        (Who::Editor, ProjectRole::Editor),
        (Who::Owner, ProjectRole::Owner),
    ] {
        acc.put_member(None, p.id, &users[&w], role, &c)
            .await
            .unwrap();
    }
    acc.put_member(None, q.id, &users[&Who::Owner], ProjectRole::Owner, &c)
        .await
        .unwrap();
    let mut tokens: BTreeMap<Who, String> = BTreeMap::new();
    for (w, u) in &users {
        tokens.insert(*w, acc.login(&u.email, pw, &c).await.unwrap().access_token);
    }
    tokens.insert(
        Who::Admin,
        acc.login(&admin_email, &admin_pw, &c)
            .await
            .unwrap()
            .access_token,
    );
    let owner = &users[&Who::Owner];
    for scope in Scope::ALL {
        let (_, secret) = acc
            .create_key(
                None,
                owner,
                "k",
                vec![*scope],
                Some(p.id),
                Some(Duration::from_secs(3600)),
                &c,
            )
            .await
            .unwrap();
        tokens.insert(Who::Key(*scope), secret);
    }
    let (_, other) = acc
        .create_key(
            None,
            owner,
            "other",
            Scope::ALL.to_vec(),
            Some(q.id),
            None,
            &c,
        )
        .await
        .unwrap();
    tokens.insert(Who::OtherProjectKey, other);

    // A ready document of P with one page (and a fresh one per caller for DELETE).
    let add_doc = |n: usize| {
        let st = st.clone();
        let pid = p.id;
        async move {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), format!("document {n} of the matrix")).unwrap();
            let staged = st.ingest.stage_path(f.path()).await.unwrap();
            let added = st.ingest.add(pid, staged, "upload", None).await.unwrap();
            let id = added.document.id;
            st.store
                .finish_document(
                    id,
                    &bunko_core::documents::Processed {
                        title: None,
                        meta: Default::default(),
                        language: Some("en".into()),
                        pages: vec![bunko_core::documents::PageText {
                            page: 1,
                            text: "text".into(),
                            raw: "text".into(),
                            method: bunko_core::documents::PageMethod::Text,
                            confidence: None,
                            offsets: vec![(0, 0)],
                        }],
                        chunks: Vec::new(),
                    },
                )
                .await
                .unwrap();
            id.to_string()
        }
    };
    let doc = add_doc(0).await;

    let app = router(st.clone());
    let mut whos: Vec<Who> = vec![Who::Anon];
    whos.extend(tokens.keys().copied());
    let mut routes = bunko_server::routes::route_list();
    // Logging out ends sessions: do it last.
    routes.sort_by_key(|(_, p)| *p == "/api/v1/auth/logout");
    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, path) in &routes {
        for w in &whos {
            let Some(exp) = expected(method, path, *w) else {
                panic!(
                    "no authorization-matrix entry for {method} {path}: add one to tests/it/authz.rs"
                );
            };
            // Deleting a project is tried on a fresh copy of P (same members; keys re-made
            // for the copy), so P itself survives for the other cells.
            let mut token = tokens.get(w).cloned();
            let mut target = p.slug.clone();
            if *method == Method::DELETE && *path == "/api/v1/projects/{project}" {
                let d = bunko_core::projects::create(
                    st.store.as_ref(),
                    &format!("Doomed {cells}"),
                    None,
                )
                .await
                .unwrap();
                for (mw, role) in [
                    (Who::Viewer, ProjectRole::Viewer),
                    (Who::Editor, ProjectRole::Editor),
                    (Who::Owner, ProjectRole::Owner),
                ] {
                    acc.put_member(None, d.id, &users[&mw], role, &c)
                        .await
                        .unwrap();
                }
                if let Who::Key(scope) = w {
                    let (_, secret) = acc
                        .create_key(None, owner, "d", vec![*scope], Some(d.id), None, &c)
                        .await
                        .unwrap();
                    token = Some(secret);
                }
                target = d.slug;
            }
            let fresh_doc = if *method == Method::DELETE && *path == "/api/v1/documents/{id}" {
                add_doc(cells + 1).await
            } else {
                doc.clone()
            };
            let concrete = path
                .replace("{asset}", "docs.js")
                .replace("{project}", &target)
                .replace("{user}", "outsider@x.org")
                .replace("{n}", "1")
                .replace("{name}", "no-such-schedule")
                .replace("{note}", "0190a0a0-0000-7000-8000-000000000000")
                .replace(
                    "{id}",
                    if path.starts_with("/api/v1/users") {
                        "viewer@x.org"
                    } else if path.starts_with("/api/v1/documents") {
                        &fresh_doc
                    } else {
                        "0190a0a0-0000-7000-8000-000000000000"
                    },
                );
            let mut req = Request::builder().method(method.clone()).uri(&concrete);
            if let Some(t) = token.as_ref() {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let body = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                req = req.header("content-type", "application/json");
                // PATCH users with no fields changes nothing; everything else gets an invalid body.
                if *method == Method::PATCH {
                    "{}"
                } else {
                    "{\"unexpected\": true}"
                }
            } else {
                ""
            };
            let res = app
                .clone()
                .oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let got = if status == 404 && text.contains("project `") {
                Hidden
            } else {
                S(status)
            };
            cells += 1;
            if got != exp {
                failures.push(format!(
                    "{method} {path} as {w:?}: expected {exp:?}, got {got:?} {text}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cells >= 32 * 13, "{cells} cells");
    // The three allowed deletions were audited.
    let f = bunko_core::ports::AuditFilter {
        event: Some("project.deleted".into()),
        ..Default::default()
    };
    let deleted = st
        .store
        .list_audit(
            &f,
            bunko_core::ports::PageRequest {
                limit: 50,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(deleted.items.len(), 3, "{:?}", deleted.items);
    let denied = bunko_core::ports::AuditFilter {
        event: Some("permission.denied".into()),
        ..Default::default()
    };
    assert!(
        !st.store
            .list_audit(
                &denied,
                bunko_core::ports::PageRequest {
                    limit: 5,
                    before: None
                }
            )
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
