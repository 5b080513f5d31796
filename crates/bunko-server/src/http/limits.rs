//! Rate limiting by route class (GCRA): per user or key when signed in, per client address
//! otherwise. Answers 429 with `Retry-After`; every limited response carries `RateLimit-*`.

use super::auth::client_info;
use super::error::ApiError;
use crate::app::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bunko_core::Code;
use bunko_core::identity::{Credential, Principal};
use bunko_core::limits::Quota;

/// The class a route template belongs to.
pub fn route_class(route: &str) -> Option<&'static str> {
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" | "/docs/{asset}" | "/" => {
            None
        }
        "/api/v1/auth/login" | "/api/v1/auth/refresh" | "/api/v1/auth/password" => Some("auth"),
        "/api/v1/search" => Some("search"),
        "/api/v1/ask" | "/api/v1/projects/{project}/notes:generate" => Some("ask"),
        "/v1/chat/completions"
        | "/v1/embeddings"
        | "/v1/models"
        | "/api/chat"
        | "/api/generate"
        | "/api/embed"
        | "/api/tags"
        | "/api/show"
        | "/api/version" => Some("gateway"),
        _ => Some("default"),
    }
}

pub async fn rate_limit(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let limits = &state.config.limits;
    let Some(class) = matched.as_ref().and_then(|m| route_class(m.as_str())) else {
        return next.run(req).await;
    };
    let Some(rate) = limits.classes.get(class).filter(|_| limits.enabled) else {
        return next.run(req).await;
    };
    let who = match req.extensions().get::<Principal>() {
        Some(Principal {
            credential: Credential::ApiKey { key_id, .. },
            ..
        }) => format!("key:{key_id}"),
        Some(p) => format!("user:{}", p.user_id),
        None => {
            let (parts, body) = req.into_parts();
            let ip = client_info(&parts, &state)
                .ip
                .unwrap_or_else(|| "unknown".into());
            let r = Request::from_parts(parts, body);
            return limited(&state, class, &format!("ip:{ip}"), *rate, r, next).await;
        }
    };
    limited(&state, class, &who, *rate, req, next).await
}

async fn limited(
    state: &AppState,
    class: &str,
    who: &str,
    rate: bunko_core::config::RateConfig,
    req: Request,
    next: Next,
) -> Response {
    let d = state
        .limiter
        .check(
            &format!("{class}:{who}"),
            Quota {
                per_second: rate.per_second,
                burst: rate.burst,
            },
        )
        .await;
    let mut res = if d.allowed {
        next.run(req).await
    } else {
        state
            .metrics
            .ratelimit_rejections
            .with_label_values(&[class])
            .inc();
        ApiError(
            bunko_core::Error::new(
                Code::RateLimited,
                format!(
                    "the `{class}` rate limit is {} requests at once, then {}/s",
                    rate.burst, rate.per_second
                ),
            )
            .with_retry_after(d.retry_after),
        )
        .into_response()
    };
    let h = res.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert(
        "ratelimit-reset",
        HeaderValue::from(d.reset_after.as_secs_f64().ceil() as u64),
    );
    res
}
