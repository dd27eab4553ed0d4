//! How the HTTP side is served: `--web.config.file` (TLS, basic auth, response headers,
//! a rate limit; the Prometheus exporter-toolkit format) and the guarded server that
//! bounds what clients can hold (connections, time, request size). What is served is
//! [`crate::http`]'s router.

mod auth;
mod config;
mod serve;

pub use auth::{BasicAuth, RateLimit};
pub use config::{load, ClientAuth, WebConfig, WebConfigError};
pub use serve::{
    serve, Limits, MAX_BODY_BYTES, MAX_HEADERS, MAX_HEADER_BYTES, RESPONSE_DEADLINE, WRITE_STALL,
};
