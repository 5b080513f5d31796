//! Records the git commit for `bunko_build_info{commit}` (or "unknown" outside a checkout).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUNKO_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    if std::env::var_os("BUNKO_COMMIT").is_some() {
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUNKO_COMMIT={commit}");
}
