mod authz;
mod cli;
mod http;
mod process;
mod security;
mod support;
mod tls;
