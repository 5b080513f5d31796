#![allow(clippy::print_stdout)] // CLI output

use crate::app::{build_accounts, open_store, prepare_data_dir};
use crate::cli::{CliError, KeyCmd, ProjectCmd, UserCmd};
use bunko_core::accounts::{Accounts, ClientInfo};
use bunko_core::config::Config;
use bunko_core::identity::{GlobalRole, ProjectRole, Scope, UserStatus};
use bunko_core::ids::rfc3339;
use bunko_core::ports::{MetaStore, PageRequest};
use std::sync::Arc;
use std::time::Duration;

pub async fn migrate(config: &Config) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let _store = open_store(config).await?;
    println!(
        "database {} is up to date",
        config.database_url().redacted()
    );
    Ok(())
}

async fn accounts(config: &Config) -> Result<(Arc<dyn MetaStore>, Accounts), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(config).await?;
    let accounts = build_accounts(config, &store)?;
    Ok((store, accounts))
}

fn cli_client() -> ClientInfo {
    ClientInfo {
        ip: None,
        user_agent: Some("bunko-cli".into()),
    }
}

/// A password from standard input (first line), or a generated one.
fn password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((bunko_core::accounts::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::failure(format!("cannot read standard input: {e}")))?;
    Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
}

pub async fn user(config: &Config, cmd: UserCmd) -> Result<(), CliError> {
    let (store, acc) = accounts(config).await?;
    let c = cli_client();
    match cmd {
        UserCmd::Add {
            email,
            admin,
            name,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let role = if admin {
                GlobalRole::Admin
            } else {
                GlobalRole::Member
            };
            let (u, _) = acc
                .create_user(None, &email, &name.unwrap_or_default(), role, Some(&pw), &c)
                .await?;
            println!("created {} ({}) {}", u.email, u.role, u.id);
            if generated {
                println!("one-time password (shown once): {pw}");
            }
        }
        UserCmd::Passwd {
            email,
            password_stdin,
        } => {
            let u = acc.user(&email).await?;
            let (pw, generated) = password(password_stdin)?;
            acc.set_password(None, &u, &pw, &c).await?;
            println!("password of {} changed; their sessions have ended", u.email);
            if generated {
                println!("new password (shown once): {pw}");
            }
        }
        UserCmd::Disable { email } => {
            let u = acc.user(&email).await?;
            acc.set_status(None, &u, UserStatus::Disabled, &c).await?;
            println!(
                "{} is disabled; their sessions and keys stopped working",
                u.email
            );
        }
        UserCmd::Enable { email } => {
            let u = acc.user(&email).await?;
            acc.set_status(None, &u, UserStatus::Active, &c).await?;
            println!("{} is active", u.email);
        }
        UserCmd::Role { email, role } => {
            let u = acc.user(&email).await?;
            let r = GlobalRole::parse(&role)
                .ok_or_else(|| CliError::usage("role must be admin or member"))?;
            acc.set_role(None, &u, r, &c).await?;
            println!("{} is now {r}", u.email);
        }
        UserCmd::List => {
            let page = store
                .list_users(PageRequest {
                    limit: 500,
                    before: None,
                })
                .await?;
            println!(
                "{:<36}  {:<32}  {:<6}  {:<8}  CREATED",
                "ID", "EMAIL", "ROLE", "STATUS"
            );
            for u in page.items {
                println!(
                    "{:<36}  {:<32}  {:<6}  {:<8}  {}",
                    u.id,
                    u.email,
                    u.role,
                    u.status,
                    rfc3339(u.created_at_ms)
                );
            }
        }
    }
    Ok(())
}

pub async fn project(config: &Config, cmd: ProjectCmd) -> Result<(), CliError> {
    let (store, acc) = accounts(config).await?;
    let c = cli_client();
    match cmd {
        ProjectCmd::Create {
            name,
            description,
            owner,
        } => {
            let p =
                bunko_core::projects::create(store.as_ref(), &name, description.as_deref()).await?;
            if let Some(o) = owner {
                let u = acc.user(&o).await?;
                acc.put_member(None, p.id, &u, ProjectRole::Owner, &c)
                    .await?;
            }
            println!("created project {} (slug {}) {}", p.name, p.slug, p.id);
        }
        ProjectCmd::List => {
            let page = store
                .list_projects(PageRequest {
                    limit: 500,
                    before: None,
                })
                .await?;
            println!("{:<36}  {:<24}  NAME", "ID", "SLUG");
            for p in page.items {
                println!("{:<36}  {:<24}  {}", p.id, p.slug, p.name);
            }
        }
        ProjectCmd::AddMember {
            project,
            email,
            role,
        } => {
            let p = bunko_core::projects::get(store.as_ref(), &project).await?;
            let u = acc.user(&email).await?;
            let r = ProjectRole::parse(&role)
                .ok_or_else(|| CliError::usage("role must be owner, editor or viewer"))?;
            acc.put_member(None, p.id, &u, r, &c).await?;
            println!("{} is {r} of {}", u.email, p.slug);
        }
    }
    Ok(())
}

/// `90d`, `12h`, `30m`, `3600s`.
pub fn parse_duration(s: &str) -> Result<Duration, CliError> {
    let bad = || CliError::usage(format!("`{s}` is not a duration like 90d, 12h or 30m"));
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn key(config: &Config, cmd: KeyCmd) -> Result<(), CliError> {
    let (store, acc) = accounts(config).await?;
    let c = cli_client();
    match cmd {
        KeyCmd::Create {
            user,
            project,
            scopes,
            expires,
            name,
        } => {
            let u = acc.user(&user).await?;
            let scopes = Scope::parse_list(&scopes).map_err(CliError::usage)?;
            let project = match project {
                Some(p) => Some(bunko_core::projects::get(store.as_ref(), &p).await?.id),
                None => None,
            };
            let expires = expires.as_deref().map(parse_duration).transpose()?;
            let (k, secret) = acc
                .create_key(
                    None,
                    &u,
                    &name.unwrap_or_else(|| "cli".into()),
                    scopes,
                    project,
                    expires,
                    &c,
                )
                .await?;
            println!(
                "key {} for {} (scopes {})",
                k.id,
                u.email,
                k.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("secret (shown once): {secret}");
        }
        KeyCmd::Revoke { id } => {
            let uuid = uuid::Uuid::parse_str(&id)
                .map_err(|_| CliError::failure(format!("key `{id}` does not exist")))?;
            let k = store
                .get_api_key(uuid)
                .await?
                .ok_or_else(|| CliError::failure(format!("key `{id}` does not exist")))?;
            acc.revoke_key(None, &k, &c).await?;
            println!("key {} revoked", k.id);
        }
        KeyCmd::List { user } => {
            let owner = match user {
                Some(u) => Some(acc.user(&u).await?.id),
                None => None,
            };
            let page = store
                .list_api_keys(
                    owner,
                    PageRequest {
                        limit: 500,
                        before: None,
                    },
                )
                .await?;
            println!(
                "{:<36}  {:<16}  {:<20}  {:<24}  STATE",
                "ID", "PREFIX", "SCOPES", "LAST USED"
            );
            for k in page.items {
                let state = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<16}  {:<20}  {:<24}  {state}",
                    k.id,
                    k.prefix,
                    k.scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    k.last_used_at_ms.map(rfc3339).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
