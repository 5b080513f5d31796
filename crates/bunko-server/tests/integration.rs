//! bunko-server's one integration test binary. `support` starts real `bunko` processes on
//! loopback ports with their own data dirs; `http` drives the router in-process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::print_stderr
)]

mod it;
