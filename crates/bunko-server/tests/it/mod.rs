mod authz;
mod cli;
mod eval;
mod http;
mod process;
mod security;
mod support;
mod tls;
