#![allow(clippy::print_stdout)] // CLI output

use crate::app::{open_store, prepare_data_dir};
use crate::backup::{self, BackupError};
use crate::cli::{BackupCmd, CliError};
use bunko_core::config::Config;

fn cli_err(e: BackupError) -> CliError {
    match e {
        BackupError::Refused(m) => CliError::usage(m),
        BackupError::Corrupt(m) => CliError::failure(m),
        BackupError::Io(m) => CliError::failure(m),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub async fn run(config: Config, cmd: BackupCmd) -> Result<(), CliError> {
    match cmd {
        BackupCmd::Create { json } => {
            prepare_data_dir(&config.data_dir)?;
            let store = open_store(&config).await?;
            let made = backup::create(&config, store.as_ref()).await;
            store.close().await;
            let made = made.map_err(cli_err)?;
            if json {
                println!("{}", serde_json::to_string(&made).unwrap_or_default());
            } else {
                println!(
                    "{}  {}  {} files  {:.1} s",
                    made.archive.display(),
                    mib(made.bytes),
                    made.files,
                    made.seconds
                );
                for p in &made.pruned {
                    println!("removed (retention): {}", p.display());
                }
            }
        }
        BackupCmd::List { json } => {
            for a in backup::list(&backup::dir(&config)).map_err(cli_err)? {
                if json {
                    println!("{}", serde_json::to_string(&a).unwrap_or_default());
                } else {
                    println!(
                        "{}  {}  {}",
                        a.created_at,
                        mib(a.bytes),
                        a.archive.display()
                    );
                }
            }
        }
        BackupCmd::Verify { archive, json } => {
            let v = backup::verify(&archive, None).await.map_err(cli_err)?;
            if json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "ok: {} — {} files, {}, schema v{}, taken {}",
                    v.archive.display(),
                    v.files,
                    mib(v.bytes),
                    v.schema_version,
                    v.created_at
                );
            }
        }
        BackupCmd::Restore { archive, force } => {
            let v = backup::restore(&config, &archive, force)
                .await
                .map_err(cli_err)?;
            println!(
                "restored {} ({} files, taken {}) into {}; rebuilding the search index",
                v.archive.display(),
                v.files,
                v.created_at,
                config.data_dir.display()
            );
            // Migrations (an older backup) run as the store opens; then the index.
            crate::commands::index::rebuild(&config, None)
                .await
                .map_err(|e| {
                    CliError::failure(format!(
                        "the data is restored, but rebuilding the search index failed: {}",
                        e.message
                    ))
                    .hint("fix the cause, then run `bunko index rebuild`")
                })?;
        }
    }
    Ok(())
}
