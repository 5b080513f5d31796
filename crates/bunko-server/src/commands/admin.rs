#![allow(clippy::print_stdout)] // CLI output

use crate::app::{open_store, prepare_data_dir};
use crate::cli::CliError;
use crate::http::auth;
use bunko_core::config::Config;

pub async fn migrate(config: &Config) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let _store = open_store(config).await?;
    println!(
        "database {} is up to date",
        config.database_url().redacted()
    );
    Ok(())
}

pub async fn admin_token(config: &Config, rotate: bool) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(config).await?;
    let path = auth::token_file(&config.data_dir);
    if rotate {
        auth::rotate_bootstrap_token(store.as_ref(), &config.data_dir)
            .await
            .map_err(|e| CliError::failure(format!("cannot rotate the token: {e}")))?;
        println!(
            "a new bootstrap admin token is in {} (the old one no longer works)",
            path.display()
        );
    } else {
        let made = auth::ensure_bootstrap_token(store.as_ref(), &config.data_dir)
            .await
            .map_err(|e| CliError::failure(format!("cannot create the token: {e}")))?;
        if made.is_some() || path.is_file() {
            println!("the bootstrap admin token is in {}", path.display());
        } else {
            return Err(
                CliError::failure(format!("the token file {} is gone", path.display()))
                    .hint("make a new one with `bunko admin-token --rotate`"),
            );
        }
    }
    Ok(())
}
