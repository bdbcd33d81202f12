//! What one request of each scenario is, what it needs prepared, and what a correct answer is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::ValueEnum;
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
use recovery_service::proto::{self, FlowState};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::mail::Maildrop;

/// Passes the seed policy: long, not common, zxcvbn 4.
pub const OLD_PASSWORD: &str = "Old-Granite-Harbor-73!";
pub const NEW_PASSWORD: &str = "New-Velvet-Lantern-58?";
/// An ordinary password as a person types it: accepted, strength 4.
const ORDINARY_PASSWORD: &str = "Correct-Pony-Staple-91";
/// The slowest input the policy still hands to zxcvbn: the maximum length (128), made of
/// dictionary words, keyboard runs, years and repeats, so every matcher finds many overlapping
/// candidates (zxcvbn's cost grows with the number of matches, superlinearly in the length).
pub fn worst_case_password() -> String {
    let pattern = "password1987qwertyDragon!monkey2001asdfgh";
    pattern.chars().cycle().take(128).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: the no-op every ratio is taken against.
    Health,
    CreateCaptcha,
    /// A new flow for a login nobody has (captcha off, or `--captcha-answer`).
    StartRecovery,
    GetRecoveryFlow,
    SendVerificationCode,
    /// A wrong code: the correct answer is INVALID_ARGUMENT / CODE_INVALID.
    VerifyCodeWrong,
    /// The code read from the mailbox: a reset token.
    VerifyCodeRight,
    ResetPassword,
    /// An ordinary password.
    ValidatePassword,
    /// The longest, most pattern-rich password the policy accepts as input.
    ValidatePasswordWorst,
    CancelRecovery,
    /// The right password of a known account (one argon2id verification).
    VerifyPassword,
    /// The whole recovery: start, send, code from the mailbox, verify, reset, VerifyPassword.
    Recovery,
}

impl Scenario {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    /// Requests one prepared item serves by default (0: any number). Matches the server's
    /// defaults: one send per cooldown, four wrong codes before the fifth kills the flow.
    pub fn default_reuse(self) -> u64 {
        match self {
            Self::GetRecoveryFlow | Self::VerifyPassword => 0,
            Self::VerifyCodeWrong => 4,
            _ => 1,
        }
    }

    /// Whether requests consume prepared items.
    pub fn needs_items(self) -> bool {
        !matches!(
            self,
            Self::Health
                | Self::CreateCaptcha
                | Self::StartRecovery
                | Self::ValidatePassword
                | Self::ValidatePasswordWorst
        )
    }

    pub fn needs_mail(self) -> bool {
        matches!(
            self,
            Self::VerifyCodeRight | Self::ResetPassword | Self::Recovery
        )
    }
}

/// The clients of one HTTP/2 connection.
#[derive(Clone)]
pub struct Clients {
    pub recovery: RecoveryServiceClient<Channel>,
    pub accounts: AccountServiceClient<Channel>,
    pub health: HealthClient<Channel>,
}

impl Clients {
    pub async fn connect(address: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(address.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {address}"))?;
        Ok(Self {
            recovery: RecoveryServiceClient::new(channel.clone()),
            accounts: AccountServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }
}

/// What every request of a run shares.
pub struct Setup {
    /// Makes this run's logins unique, so runs never share flows or accounts.
    pub run_id: String,
    pub captcha_answer: Option<String>,
    pub maildrop: Option<Maildrop>,
    pub mail_timeout: Duration,
    logins: AtomicUsize,
}

impl Setup {
    pub fn new(
        captcha_answer: Option<String>,
        maildrop: Option<Maildrop>,
        mail_timeout: Duration,
    ) -> Self {
        Self {
            run_id: uuid::Uuid::new_v4().simple().to_string()[..10].to_owned(),
            captcha_answer,
            maildrop,
            mail_timeout,
            logins: AtomicUsize::new(0),
        }
    }

    pub fn fresh_login(&self) -> String {
        let n = self.logins.fetch_add(1, Ordering::Relaxed);
        format!("lg{}.{n}@bench.example", self.run_id)
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer the scenario expects.
    Correct,
    /// A success that is not the expected answer (e.g. a wrong code accepted).
    Wrong(String),
    /// An error status, as `CODE` or `CODE/REASON`.
    Error(String),
}

pub fn status_key(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    match status.get_details_error_info() {
        Some(info) => format!("{code}/{}", info.reason),
        None => code,
    }
}

fn error(step: &str, status: &tonic::Status) -> Outcome {
    if step.is_empty() {
        Outcome::Error(status_key(status))
    } else {
        Outcome::Error(format!("{step}: {}", status_key(status)))
    }
}

/// One request of `scenario`; `item` is the prepared flow id, token or login it works on.
pub async fn call(scenario: Scenario, clients: &mut Clients, setup: &Setup, item: &str) -> Outcome {
    match scenario {
        Scenario::Health => {
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            match clients.health.check(request).await {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Outcome::Correct,
                Ok(r) => Outcome::Wrong(format!("status {}", r.get_ref().status)),
                Err(s) => error("", &s),
            }
        }
        Scenario::CreateCaptcha => {
            match clients
                .recovery
                .create_captcha(proto::CreateCaptchaRequest {})
                .await
            {
                Ok(r) => {
                    let r = r.get_ref();
                    if r.image_png.starts_with(b"\x89PNG") && !r.captcha_id.is_empty() {
                        Outcome::Correct
                    } else {
                        Outcome::Wrong("no PNG".into())
                    }
                }
                Err(s) => error("", &s),
            }
        }
        Scenario::StartRecovery => match start_flow(clients, setup, &setup.fresh_login()).await {
            Ok(flow) if flow.state == FlowState::ChooseMethod as i32 => Outcome::Correct,
            Ok(flow) => Outcome::Wrong(format!("state {}", flow.state)),
            Err(s) => error("", &s),
        },
        Scenario::GetRecoveryFlow => {
            let request = proto::GetRecoveryFlowRequest {
                flow_id: item.to_owned(),
            };
            match clients.recovery.get_recovery_flow(request).await {
                Ok(r) if r.get_ref().flow_id == item => Outcome::Correct,
                Ok(_) => Outcome::Wrong("another flow".into()),
                Err(s) => error("", &s),
            }
        }
        Scenario::SendVerificationCode => match send_code(clients, item).await {
            Ok(flow) if flow.state == FlowState::CodeSent as i32 => Outcome::Correct,
            Ok(flow) => Outcome::Wrong(format!("state {}", flow.state)),
            Err(s) => error("", &s),
        },
        Scenario::VerifyCodeWrong => {
            // Well formed, so the server checks and counts it; one chance in a million of being
            // the flow's real code, which would show up as a wrong answer.
            match verify(clients, item, "000000").await {
                Ok(_) => Outcome::Wrong("a wrong code was accepted".into()),
                Err(s) if status_key(&s) == "InvalidArgument/CODE_INVALID" => Outcome::Correct,
                Err(s) => error("", &s),
            }
        }
        Scenario::VerifyCodeRight => {
            let Some((flow_id, code)) = item.split_once(' ') else {
                return Outcome::Wrong("bad prepared item".into());
            };
            match verify(clients, flow_id, code).await {
                Ok(token) if !token.is_empty() => Outcome::Correct,
                Ok(_) => Outcome::Wrong("empty token".into()),
                Err(s) => error("", &s),
            }
        }
        Scenario::ResetPassword => match reset(clients, item).await {
            Ok(()) => Outcome::Correct,
            Err(s) => error("", &s),
        },
        Scenario::ValidatePassword | Scenario::ValidatePasswordWorst => {
            let password = if scenario == Scenario::ValidatePassword {
                ORDINARY_PASSWORD.to_owned()
            } else {
                worst_case_password()
            };
            let request = proto::ValidatePasswordRequest {
                password,
                login_id: "someone@bench.example".into(),
            };
            match clients.recovery.validate_password(request).await {
                Ok(r)
                    if scenario == Scenario::ValidatePassword
                        && !r.get_ref().violations.is_empty() =>
                {
                    Outcome::Wrong("an ordinary password was refused".into())
                }
                Ok(_) => Outcome::Correct,
                Err(s) => error("", &s),
            }
        }
        Scenario::CancelRecovery => {
            let request = proto::CancelRecoveryRequest {
                flow_id: item.to_owned(),
            };
            match clients.recovery.cancel_recovery(request).await {
                Ok(_) => Outcome::Correct,
                Err(s) => error("", &s),
            }
        }
        Scenario::VerifyPassword => match verify_password(clients, item, OLD_PASSWORD).await {
            Ok(true) => Outcome::Correct,
            Ok(false) => Outcome::Wrong("the right password was refused".into()),
            Err(s) => error("", &s),
        },
        Scenario::Recovery => whole_recovery(clients, setup, item).await,
    }
}

/// The steps of the whole recovery, in order, for the time breakdown of a `recovery` run: the
/// mail step is from the end of SendVerificationCode until the code is read from the maildrop
/// (delivery worker, SMTP, the sink writing the file, the maildrop's poll).
pub const RECOVERY_STEPS: [&str; 6] = ["start", "send", "mail", "verify", "reset", "login"];

/// Per step: nanoseconds summed over the completed steps, and how many completed.
static STEP_NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static STEP_COUNT: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

fn step_done(step: usize, since: &mut Instant) {
    let now = Instant::now();
    let nanos = u64::try_from((now - *since).as_nanos()).unwrap_or(u64::MAX);
    STEP_NANOS[step].fetch_add(nanos, Ordering::Relaxed);
    STEP_COUNT[step].fetch_add(1, Ordering::Relaxed);
    *since = now;
}

/// Mean milliseconds per step of the recoveries run so far (steps with no completion left out).
pub fn recovery_step_means() -> Vec<(&'static str, f64)> {
    RECOVERY_STEPS
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let n = STEP_COUNT[i].load(Ordering::Relaxed);
            (n > 0).then(|| {
                (
                    *name,
                    STEP_NANOS[i].load(Ordering::Relaxed) as f64 / n as f64 / 1e6,
                )
            })
        })
        .collect()
}

async fn whole_recovery(clients: &mut Clients, setup: &Setup, login: &str) -> Outcome {
    let mut t = Instant::now();
    let flow = match start_flow(clients, setup, login).await {
        Ok(flow) => flow,
        Err(s) => return error("start", &s),
    };
    step_done(0, &mut t);
    if let Err(s) = send_code(clients, &flow.flow_id).await {
        return error("send", &s);
    }
    step_done(1, &mut t);
    let code = match read_code(setup, login).await {
        Ok(code) => code,
        Err(e) => return Outcome::Error(format!("mail: {e}")),
    };
    step_done(2, &mut t);
    let token = match verify(clients, &flow.flow_id, &code).await {
        Ok(token) => token,
        Err(s) => return error("verify", &s),
    };
    step_done(3, &mut t);
    if let Err(s) = reset(clients, &token).await {
        return error("reset", &s);
    }
    step_done(4, &mut t);
    match verify_password(clients, login, NEW_PASSWORD).await {
        Ok(true) => {
            step_done(5, &mut t);
            Outcome::Correct
        }
        Ok(false) => Outcome::Wrong("the new password does not log in".into()),
        Err(s) => error("login", &s),
    }
}

async fn read_code(setup: &Setup, login: &str) -> anyhow::Result<String> {
    let maildrop = setup
        .maildrop
        .as_ref()
        .ok_or_else(|| anyhow!("this scenario reads codes from a mailbox: pass --maildrop"))?;
    maildrop.code_for(login, setup.mail_timeout).await
}

pub async fn create_account(clients: &mut Clients, login: &str) -> Result<(), tonic::Status> {
    clients
        .accounts
        .create_account(proto::CreateAccountRequest {
            login_id: login.to_owned(),
            email: String::new(),
            phone: String::new(),
            password: OLD_PASSWORD.into(),
        })
        .await
        .map(|_| ())
}

async fn start_flow(
    clients: &mut Clients,
    setup: &Setup,
    login: &str,
) -> Result<proto::RecoveryFlow, tonic::Status> {
    let (captcha_id, captcha_answer) = match &setup.captcha_answer {
        Some(answer) => {
            let captcha = clients
                .recovery
                .create_captcha(proto::CreateCaptchaRequest {})
                .await?;
            (captcha.into_inner().captcha_id, answer.clone())
        }
        None => (String::new(), String::new()),
    };
    clients
        .recovery
        .start_recovery(proto::StartRecoveryRequest {
            login_id: login.to_owned(),
            captcha_id,
            captcha_answer,
            locale: "en".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .flow
        .ok_or_else(|| tonic::Status::internal("no flow in the answer"))
}

async fn send_code(
    clients: &mut Clients,
    flow_id: &str,
) -> Result<proto::RecoveryFlow, tonic::Status> {
    clients
        .recovery
        .send_verification_code(proto::SendVerificationCodeRequest {
            flow_id: flow_id.to_owned(),
            channel: proto::Channel::Email.into(),
        })
        .await?
        .into_inner()
        .flow
        .ok_or_else(|| tonic::Status::internal("no flow in the answer"))
}

async fn verify(clients: &mut Clients, flow_id: &str, code: &str) -> Result<String, tonic::Status> {
    Ok(clients
        .recovery
        .verify_code(proto::VerifyCodeRequest {
            flow_id: flow_id.to_owned(),
            code: code.to_owned(),
        })
        .await?
        .into_inner()
        .reset_token)
}

async fn reset(clients: &mut Clients, token: &str) -> Result<(), tonic::Status> {
    clients
        .recovery
        .reset_password(proto::ResetPasswordRequest {
            reset_token: token.to_owned(),
            new_password: NEW_PASSWORD.into(),
            new_password_confirmation: NEW_PASSWORD.into(),
        })
        .await
        .map(|_| ())
}

async fn verify_password(
    clients: &mut Clients,
    login: &str,
    password: &str,
) -> Result<bool, tonic::Status> {
    Ok(clients
        .accounts
        .verify_password(proto::VerifyPasswordRequest {
            login_id: login.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner()
        .valid)
}

/// A flow of `login` with a code sent, and that code as read from the mailbox.
async fn coded_flow(
    clients: &mut Clients,
    setup: &Setup,
    login: &str,
) -> anyhow::Result<(String, String)> {
    let flow = start_flow(clients, setup, login)
        .await
        .map_err(|s| anyhow!("StartRecovery: {}", status_key(&s)))?;
    send_code(clients, &flow.flow_id)
        .await
        .map_err(|s| anyhow!("SendVerificationCode: {}", status_key(&s)))?;
    let code = read_code(setup, login).await?;
    Ok((flow.flow_id, code))
}

/// Prepares `count` items for `scenario` before the clock starts, `parallel` at a time: flows,
/// `flow code` pairs, reset tokens or logins of accounts.
pub async fn prepare(
    scenario: Scenario,
    clients: &[Clients],
    setup: &Arc<Setup>,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    if !scenario.needs_items() || count == 0 {
        return Ok(Vec::new());
    }
    if scenario.needs_mail() && setup.maildrop.is_none() {
        bail!(
            "{}: codes are read from a real mailbox; pass --maildrop DIR (the SMTP sink's directory)",
            scenario.name()
        );
    }
    let next = Arc::new(AtomicUsize::new(0));
    let parallel = parallel.clamp(1, count);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..parallel {
        let mut clients = clients
            .get(worker % clients.len().max(1))
            .cloned()
            .ok_or_else(|| anyhow!("no connection"))?;
        let (setup, next) = (setup.clone(), next.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                made.push(prepare_one(scenario, &mut clients, &setup).await?);
            }
            anyhow::Ok(made)
        });
    }
    let mut items = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        items.extend(joined.context("preparation task")??);
    }
    Ok(items)
}

async fn prepare_one(
    scenario: Scenario,
    clients: &mut Clients,
    setup: &Setup,
) -> anyhow::Result<String> {
    let started = |s: tonic::Status| anyhow!("StartRecovery: {}", status_key(&s));
    match scenario {
        Scenario::GetRecoveryFlow | Scenario::SendVerificationCode | Scenario::CancelRecovery => {
            Ok(start_flow(clients, setup, &setup.fresh_login())
                .await
                .map_err(started)?
                .flow_id)
        }
        Scenario::VerifyCodeWrong => {
            let flow = start_flow(clients, setup, &setup.fresh_login())
                .await
                .map_err(started)?;
            send_code(clients, &flow.flow_id)
                .await
                .map_err(|s| anyhow!("SendVerificationCode: {}", status_key(&s)))?;
            Ok(flow.flow_id)
        }
        // An account holds one live code (a newer code in any of its flows ends the others'),
        // so every prepared code needs an account of its own.
        Scenario::VerifyCodeRight => {
            let login = setup.fresh_login();
            create_account(clients, &login)
                .await
                .map_err(|s| anyhow!("CreateAccount: {}", status_key(&s)))?;
            let (flow_id, code) = coded_flow(clients, setup, &login).await?;
            Ok(format!("{flow_id} {code}"))
        }
        Scenario::ResetPassword => {
            let login = setup.fresh_login();
            create_account(clients, &login)
                .await
                .map_err(|s| anyhow!("CreateAccount: {}", status_key(&s)))?;
            let (flow_id, code) = coded_flow(clients, setup, &login).await?;
            verify(clients, &flow_id, &code)
                .await
                .map_err(|s| anyhow!("VerifyCode: {}", status_key(&s)))
        }
        Scenario::VerifyPassword | Scenario::Recovery => {
            let login = setup.fresh_login();
            create_account(clients, &login)
                .await
                .map_err(|s| anyhow!("CreateAccount: {}", status_key(&s)))?;
            Ok(login)
        }
        Scenario::Health
        | Scenario::CreateCaptcha
        | Scenario::StartRecovery
        | Scenario::ValidatePassword
        | Scenario::ValidatePasswordWorst => Ok(String::new()),
    }
}
