mod authz;
mod cli;
mod http;
mod process;
mod support;
