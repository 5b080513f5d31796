//! Extractors whose rejections are problem+json with stable codes: malformed JSON → 400
//! `malformed_json`, wrong content type → 415, wrong field types → 422 `invalid_body`, too big
//! → 413, bad query → 400 `invalid_query`.

use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bunko_core::Code;
use serde::de::DeserializeOwned;

pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            Code::MalformedJson,
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(Code::InvalidBody, source_text(&e)),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status().as_u16() == 413 => ApiError::new(
            Code::PayloadTooLarge,
            "the request body is larger than server.body_limit_bytes",
        ),
        other => ApiError::new(Code::BadRequest, other.body_text()),
    }
}

/// serde's message without axum's prefix, e.g. "name: invalid type: integer `5`, expected a
/// string at line 1 column 10".
fn source_text(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

/// An optional JSON body, parsed where the handler chooses (after its permission checks): an
/// empty or all-whitespace body is `None`; anything else must be JSON of `T`, answered with the
/// same problem codes as [`Json`].
pub fn optional_json<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    axum::Json::<T>::from_bytes(body)
        .map(|axum::Json(v)| Some(v))
        .map_err(json_rejection)
}

pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::new(Code::InvalidQuery, source_text(&e)))
            }
            Err(other) => Err(ApiError::new(Code::InvalidQuery, other.body_text())),
        }
    }
}
