//! The one place HTTP errors are turned into `application/problem+json`
//! (`{type, title, status, detail, code, request_id}`), from the stable code table in
//! bunko-core. Handlers return [`ApiError`]; the request middleware writes the body, so errors
//! produced by layers (404, 405, 408, 413) look exactly like handler errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bunko_core::{Code, Error};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError(pub Error);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self(Error::new(code, detail))
    }
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// Carried in response extensions from the handler to the middleware that writes the body.
#[derive(Debug, Clone)]
pub struct ProblemDetails {
    pub code: Code,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Error {
            code,
            detail,
            source,
            retry_after_secs,
        } = self.0;
        if code.status() >= 500 {
            match &source {
                Some(src) => tracing::error!(code = %code, error = %src, "request failed"),
                None => tracing::error!(code = %code, detail = %detail, "request failed"),
            }
        } else {
            tracing::debug!(code = %code, detail = %detail, "request rejected");
        }
        let mut res = problem_response(code, detail);
        if let Some(secs) = retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// A response whose body the request middleware fills in (with the request id).
pub fn problem_response(code: Code, detail: String) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = status.into_response();
    res.extensions_mut().insert(ProblemDetails { code, detail });
    res
}

/// The code for an error response that carries no [`ProblemDetails`] (made by a layer).
pub fn code_for_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::BadRequest,
        401 => Code::Unauthenticated,
        403 => Code::Forbidden,
        404 => Code::RouteNotFound,
        405 => Code::MethodNotAllowed,
        408 => Code::RequestTimeout,
        409 => Code::Conflict,
        413 => Code::PayloadTooLarge,
        415 => Code::UnsupportedMediaType,
        422 => Code::InvalidBody,
        429 => Code::RateLimited,
        503 => Code::Unavailable,
        s if s < 500 => Code::BadRequest,
        _ => Code::Internal,
    }
}

fn default_detail(code: Code) -> &'static str {
    match code {
        Code::RouteNotFound => "no route matches this path; see /docs for the API",
        Code::MethodNotAllowed => "this route does not accept this method",
        Code::RequestTimeout => "the request took longer than server.request_timeout_secs",
        Code::PayloadTooLarge => "the request body is larger than server.body_limit_bytes",
        Code::Unauthenticated => "send credentials as `Authorization: Bearer <token>`",
        _ => code.title(),
    }
}

/// The error body a path's callers expect: bunko's own API answers
/// `application/problem+json`; the OpenAI-compatible API (`/v1/…`) and the Ollama-compatible
/// API (`/api/…` outside `/api/v1/`) answer in their own shapes, so their SDKs raise their usual
/// exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    Problem,
    OpenAi,
    Ollama,
}

impl ErrorShape {
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/") {
            ErrorShape::OpenAi
        } else if path.starts_with("/api/") && !path.starts_with("/api/v1/") {
            ErrorShape::Ollama
        } else {
            ErrorShape::Problem
        }
    }
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Writes the problem body. `details` = what the handler said, if anything.
pub fn render_problem(
    status: StatusCode,
    details: Option<ProblemDetails>,
    request_id: &str,
    shape: ErrorShape,
    mut parts: axum::http::response::Parts,
) -> Response {
    let (code, detail) = match details {
        Some(d) => (d.code, d.detail),
        None => {
            let c = code_for_status(status);
            (c, default_detail(c).to_owned())
        }
    };
    if shape != ErrorShape::Problem {
        let body = match shape {
            ErrorShape::OpenAi => serde_json::json!({"error": {
                "message": detail,
                "type": openai_type(status),
                "param": null,
                "code": code.as_str(),
            }}),
            _ => serde_json::json!({"error": detail}),
        };
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.status = status;
        return Response::from_parts(parts, axum::body::Body::from(body.to_string()));
    }
    let body = serde_json::json!({
        "type": format!("https://bunko.dev/errors/{}", code.as_str()),
        "title": code.title(),
        "status": status.as_u16(),
        "detail": detail,
        "code": code.as_str(),
        "request_id": request_id,
    });
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.status = status;
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}
