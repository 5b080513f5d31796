#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output

use crate::cli::CliError;
use bunko_core::config::{Config, Provenance, Severity};

/// Prints the effective configuration with secrets redacted, then its problems. Exits 2 when
/// any problem is an error.
pub fn check(config: &Config, prov: &Provenance, json: bool) -> Result<(), CliError> {
    let mut problems = config.check();
    problems.extend(prov.warnings.iter().cloned());
    if json {
        let out = serde_json::json!({
            "config": config,
            "sources": {
                "file": prov.file.as_ref().map(|p| p.display().to_string()),
                "environment": prov.env_keys,
            },
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        match &prov.file {
            Some(f) => println!("# file: {}", f.display()),
            None => println!("# file: none (compiled defaults)"),
        }
        if !prov.env_keys.is_empty() {
            println!("# environment: {}", prov.env_keys.join(", "));
        }
        println!("# database: {}", config.database_url().redacted());
        print!("{}", config.to_redacted_toml());
        for p in &problems {
            eprintln!("{p}");
        }
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    if errors > 0 {
        return Err(CliError::usage(format!("{errors} configuration error(s)")));
    }
    Ok(())
}
