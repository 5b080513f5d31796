//! HTTP plumbing: the problem+json error type, extractors that answer bad input with stable
//! codes, and the middleware stack (request context, metrics, auth, limits).

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod middleware;

pub use error::{ApiError, ApiResult};
