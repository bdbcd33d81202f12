//! The command line: `serve` (default), `migrate`, `account create|delete|export`,
//! `config check`, `config schema`, `probe`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recovery_service::accounts::commands::{CreateAccount, DeleteAccount, ExportAccountData};
use recovery_service::config::Config;
use recovery_service::db::Database;
use recovery_service::recovery::RecoveryError;
use recovery_service::recovery::input::LoginId;
use recovery_service::server::{App, Overrides};
use secrecy::SecretString;

#[derive(Parser)]
#[command(
    name = "recovery-service",
    version,
    about = "Password recovery for the identity platform (gRPC)"
)]
struct Cli {
    /// TOML configuration file (also RECOVERY_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Exit 0 when this host's service is ready: asks `/readyz` of the admin listener
    /// (`admin.listen`), for container health checks in images without a shell or curl.
    Probe,
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account; the password is read from standard input (never from arguments).
    Create {
        #[arg(long)]
        login_id: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Lift the per-login and per-account rate limits of a login (an owner locked out of
    /// recovery by someone who spent its budget) and a report freeze ("it wasn't me"). Check
    /// who is asking first: this also gives an attacker a fresh budget.
    Unblock {
        #[arg(long)]
        login_id: String,
    },
    /// Erase an account (same as `AccountService.DeleteAccount`).
    Delete {
        #[arg(long)]
        account_id: String,
    },
    /// Print everything stored about an account as JSON (`AccountService.ExportAccountData`).
    Export {
        #[arg(long)]
        account_id: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration, secrets redacted.
    Check {
        /// Also open the database, Redis and the SMTP relay and read the TLS files; exits
        /// non-zero if any of them fails.
        #[arg(long)]
        connect: bool,
    },
    /// Print the configuration's JSON Schema (draft-07): every key, its description, default,
    /// range and allowed words. Editors validate a TOML file against it (taplo:
    /// `#:schema ./config.schema.json` on the first line).
    Schema,
}

/// `probe`: GET `/readyz` on the admin listener's port over loopback, within 2 s.
async fn probe(config: &Config) -> anyhow::Result<()> {
    let Some(admin) = config.admin.listen else {
        anyhow::bail!("admin.listen is not set: there is no /readyz to ask");
    };
    // reqwest has no TLS provider of its own here (ring is the tree's one); plain HTTP needs
    // none, but building the client asks for it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://127.0.0.1:{}/readyz", admin.port());
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

fn print_schema() -> ExitCode {
    let schema = recovery_service::config::schema::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: the schema cannot be printed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The schema describes the configuration; it needs none, valid or not.
    if let Some(Command::Config {
        command: ConfigCommand::Schema,
    }) = &cli.command
    {
        return print_schema();
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime(&config) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let result = runtime.block_on(async {
        let telemetry = recovery_service::telemetry::init_with_prometheus(
            &config.log_format,
            config.otlp_endpoint.as_deref(),
            config.admin.listen.is_some(),
        )?;
        let result = execute(command, config).await;
        telemetry.shutdown();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-thread runtime, with its blocking pool capped. The service's blocking work is
/// argon2 (`hashing.max_in_flight` permits) and the CPU pool (one permit per core); tokio's
/// default cap of 512 threads let a flood grow ~25 short-lived threads beyond those, because a
/// permit is handed on before its thread is idle again, and every new thread costs its stack
/// and often a malloc arena of its own (peak RSS under 1,000 concurrent resets).
/// The few other users (DNS lookups, file reads) get `BLOCKING_SPARE` threads of their own;
/// work beyond the cap waits in tokio's queue, which is safe because no blocking task waits
/// for another.
fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    const BLOCKING_SPARE: usize = 4;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.hashing.max_in_flight.max(1) + cores + BLOCKING_SPARE)
        .build()
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => recovery_service::server::run(config).await,
        Command::Probe => probe(&config).await,
        Command::Migrate => {
            let db = Database::connect(&config.database_url, &config.database).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { connect },
        } => {
            print!("{}", config.redacted_toml());
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            if !connect {
                return Ok(());
            }
            let checks = recovery_service::server::check::connect_all(&config).await;
            println!();
            for check in &checks {
                println!("# {check}");
            }
            let failed = checks.iter().filter(|c| c.failed()).count();
            anyhow::ensure!(failed == 0, "{failed} of {} checks failed", checks.len());
            Ok(())
        }
        // Answered in `main` before any configuration is loaded.
        Command::Config {
            command: ConfigCommand::Schema,
        } => Ok(()),
        Command::Account {
            command:
                AccountCommand::Create {
                    login_id,
                    email,
                    phone,
                },
        } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            // One trailing newline is what `echo` or a here-string adds; it is not part of the
            // password.
            let password = password
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&password);
            let password = SecretString::from(password.to_owned());
            let app = App::build(config, Overrides::default()).await?;
            let command = CreateAccount::parse(
                &login_id,
                email.as_deref().unwrap_or(""),
                phone.as_deref().unwrap_or(""),
                &password,
            );
            let created = match command {
                Ok(command) => app.recovery.create_account(command).await,
                Err(error) => Err(error),
            };
            let account = created.map_err(|error| anyhow::anyhow!(describe(&error)))?;
            println!("{}", account.id);
            Ok(())
        }
        Command::Account {
            command: AccountCommand::Unblock { login_id },
        } => {
            let login = LoginId::parse("login_id", &login_id)
                .map_err(|violation| anyhow::anyhow!("login_id {}", violation.description))?;
            let app = App::build(config, Overrides::default()).await?;
            app.recovery
                .unblock(&login)
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))?;
            println!("limits and any report freeze lifted");
            Ok(())
        }
        Command::Account {
            command: AccountCommand::Delete { account_id },
        } => {
            let command = DeleteAccount::parse(&account_id)
                .map_err(|error| anyhow::anyhow!(describe(&error)))?;
            let app = App::build(config, Overrides::default()).await?;
            app.recovery
                .delete_account(command)
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))?;
            println!("account {account_id} deleted");
            Ok(())
        }
        Command::Account {
            command: AccountCommand::Export { account_id },
        } => {
            let command = ExportAccountData::parse(&account_id)
                .map_err(|error| anyhow::anyhow!(describe(&error)))?;
            let app = App::build(config, Overrides::default()).await?;
            let json = app
                .recovery
                .export_account_data(command)
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))?;
            println!("{json}");
            Ok(())
        }
    }
}

/// A one-line explanation of an error for a terminal (never contains a secret value).
fn describe(error: &RecoveryError) -> String {
    match error {
        RecoveryError::InvalidArgument(violations) => violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        RecoveryError::PasswordPolicy(violations) => violations
            .iter()
            .map(|v| format!("password {} ({})", v.message, v.reason))
            .collect::<Vec<_>>()
            .join("; "),
        other => match source_chain(other) {
            chain if chain.is_empty() => other.to_string(),
            chain => format!("{other}: {chain}"),
        },
    }
}

fn source_chain(error: &RecoveryError) -> String {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        chain.push(error.to_string());
        source = error.source();
    }
    chain.join(": ")
}
