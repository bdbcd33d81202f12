//! The load: whole recoveries (start, send code, read the code from the real SMTP sink, verify,
//! reset, then replay the used code and token), each call sent to the next replica in turn
//! (client-side round robin), every call and its outcome recorded for the invariants.
//!
//! This is the seam for a different load generator (such as `src/bin/loadgen`): `run_recovery`
//! takes an account and returns a `Recovery`; the driver needs nothing else from it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
use recovery_service::proto::{
    Channel as ProtoChannel, CreateAccountRequest, ResetPasswordRequest,
    SendVerificationCodeRequest, StartRecoveryRequest, VerifyCodeRequest, VerifyPasswordRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One call's answer, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Answered by the service: a `google.rpc.Status` with its `ErrorInfo` reason.
    Service {
        code: Code,
        reason: String,
    },
    /// No answer from the service (connection refused or reset, client deadline): the call may
    /// or may not have taken effect.
    Transport {
        code: Code,
    },
}

#[derive(Debug, Clone)]
pub struct Call {
    /// Seconds since the soak started.
    pub at: f64,
    pub rpc: &'static str,
    pub replica: usize,
    pub outcome: Outcome,
    /// How long this try took, from sending it to its answer (or to giving up on it).
    pub ms: f64,
}

/// How one logical step (a call and its retries) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// A final error answered by the service; `ambiguous`: an earlier try went unanswered.
    Error { reason: String, ambiguous: bool },
    /// Still failing when the step's deadline passed.
    GaveUp { ambiguous: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetEnd {
    NotTried,
    Ok,
    /// Answered with an error and never unanswered: the password must not have changed.
    Refused(String),
    /// Some try went unanswered and none was answered OK: either outcome is possible.
    Ambiguous,
}

#[derive(Debug, Clone)]
pub struct Recovery {
    pub account: usize,
    pub flow_id: Option<String>,
    pub sends_ok: u32,
    pub sends_ambiguous: u32,
    pub password: String,
    pub reset: ResetEnd,
    pub replayed_code_worked: bool,
    pub replayed_token_worked: bool,
    pub replay_password: String,
    pub ended: Option<String>,
    /// Steps answered UNAVAILABLE whose retry found the work done.
    pub unavailable_took_effect: u32,
}

pub struct Account {
    pub login: String,
    pub id: String,
}

pub struct Mail {
    pub code: Option<String>,
    pub at: f64,
    /// The queue gives every attempt of one message the same Message-ID, so a copy sent again
    /// after a lost acknowledgement is recognisable.
    pub message_id: String,
}

/// The sink's messages as the caller's mailbox sees them, indexed by recipient.
#[derive(Default)]
pub struct Mailboxes {
    seen: HashSet<u64>,
    pub mails: Vec<Mail>,
    by_address: HashMap<String, Vec<usize>>,
}

impl Mailboxes {
    /// Adds messages not seen before (`raw` is every message stored so far, any order; a
    /// stored file is identified by its content hash, since sinks restart their numbering).
    pub fn absorb(&mut self, raw: Vec<Vec<u8>>, now: f64) {
        for bytes in raw {
            if !self.seen.insert(content_hash(&bytes)) {
                continue;
            }
            let Ok(parsed) = mailparse::parse_mail(&bytes) else {
                continue;
            };
            let header = |name: &str| {
                parsed
                    .headers
                    .iter()
                    .find(|h| h.get_key().eq_ignore_ascii_case(name))
                    .map(|h| h.get_value())
                    .unwrap_or_default()
            };
            let to = header("To")
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase();
            let subject = header("Subject");
            let code = if subject.contains("recovery code") {
                text_of(&parsed).and_then(|text| {
                    text.lines()
                        .map(str::trim)
                        .find(|line| line.len() == 6 && line.bytes().all(|b| b.is_ascii_digit()))
                        .map(str::to_owned)
                })
            } else {
                None
            };
            let index = self.mails.len();
            self.by_address.entry(to).or_default().push(index);
            self.mails.push(Mail {
                code,
                at: now,
                message_id: header("Message-ID"),
            });
        }
    }

    /// The address's distinct messages (first copy of each Message-ID), in arrival order.
    fn distinct(&self, address: &str) -> Vec<&Mail> {
        let mut ids = HashSet::new();
        self.by_address
            .get(address)
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|&i| &self.mails[i])
                    .filter(|mail| ids.insert(mail.message_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn codes_for(&self, address: &str) -> Vec<String> {
        self.distinct(address)
            .into_iter()
            .filter_map(|mail| mail.code.clone())
            .collect()
    }

    pub fn notices_for(&self, address: &str) -> usize {
        self.distinct(address)
            .into_iter()
            .filter(|mail| mail.code.is_none())
            .count()
    }

    /// Extra copies of a message already delivered (same Message-ID), for the address.
    pub fn copies_for(&self, address: &str) -> usize {
        self.by_address.get(address).map_or(0, Vec::len) - self.distinct(address).len()
    }
}

fn text_of(mail: &mailparse::ParsedMail<'_>) -> Option<String> {
    if mail.subparts.is_empty() {
        return mail.get_body().ok();
    }
    mail.subparts
        .iter()
        .find(|part| part.ctype.mimetype == "text/plain")
        .and_then(|part| part.get_body().ok())
        .or_else(|| mail.subparts.iter().find_map(text_of))
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Everything the recoveries share.
pub struct Load {
    channels: Vec<Channel>,
    next: AtomicUsize,
    pub started: Instant,
    pub calls: Mutex<Vec<Call>>,
    pub mailboxes: Arc<Mutex<Mailboxes>>,
    /// ResetPassword calls in flight per replica (the schedule kills a replica mid-reset).
    pub resets_in_flight: Vec<AtomicUsize>,
    /// How long one step keeps retrying an unavailable service.
    pub step_deadline: Duration,
}

const RETRY_PAUSE: Duration = Duration::from_millis(250);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Load {
    pub fn new(ports: &[u16], mailboxes: Arc<Mutex<Mailboxes>>) -> anyhow::Result<Self> {
        let channels = ports
            .iter()
            .map(|port| {
                Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            resets_in_flight: ports.iter().map(|_| AtomicUsize::new(0)).collect(),
            channels,
            next: AtomicUsize::new(0),
            started: Instant::now(),
            calls: Mutex::new(Vec::new()),
            mailboxes,
            step_deadline: Duration::from_secs(120),
        })
    }

    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn record(&self, rpc: &'static str, replica: usize, outcome: Outcome, sent: Instant) {
        let call = Call {
            at: self.now(),
            rpc,
            replica,
            outcome,
            ms: sent.elapsed().as_secs_f64() * 1000.0,
        };
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }

    /// One logical step: the call, retried on the next replica while it is unavailable.
    /// `retry_on` lists service reasons that are worth another try too.
    async fn step<T, F, Fut>(&self, rpc: &'static str, call: F) -> (Result<T, StepEnd>, bool)
    where
        F: FnMut(Channel, usize) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (result, ambiguous, _) = self.step_seen(rpc, call).await;
        (result, ambiguous)
    }

    /// `step`, also telling whether the service answered UNAVAILABLE on the way.
    async fn step_seen<T, F, Fut>(
        &self,
        rpc: &'static str,
        mut call: F,
    ) -> (Result<T, StepEnd>, bool, bool)
    where
        F: FnMut(Channel, usize) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.step_deadline;
        let mut ambiguous = false;
        let mut unavailable = false;
        loop {
            let replica = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
            let sent = Instant::now();
            let result = call(self.channels[replica].clone(), replica).await;
            match result {
                Ok(response) => {
                    self.record(rpc, replica, Outcome::Ok, sent);
                    return (Ok(response.into_inner()), ambiguous, unavailable);
                }
                Err(status) => {
                    let outcome = classify(&status);
                    self.record(rpc, replica, outcome.clone(), sent);
                    let retry = match &outcome {
                        Outcome::Transport { .. } => {
                            ambiguous = true;
                            true
                        }
                        Outcome::Service { code, .. } => {
                            unavailable |= *code == Code::Unavailable;
                            *code == Code::Unavailable
                        }
                        Outcome::Ok => false,
                    };
                    if !retry {
                        let Outcome::Service { reason, .. } = outcome else {
                            unreachable!("only service errors end a step")
                        };
                        return (
                            Err(StepEnd::Error { reason, ambiguous }),
                            ambiguous,
                            unavailable,
                        );
                    }
                    if Instant::now() >= deadline {
                        return (Err(StepEnd::GaveUp { ambiguous }), ambiguous, unavailable);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    pub async fn create_account(&self, login: &str, password: &str) -> anyhow::Result<String> {
        let (result, _) = self
            .step("CreateAccount", |channel, _| {
                let request = CreateAccountRequest {
                    login_id: login.to_owned(),
                    email: String::new(),
                    phone: String::new(),
                    password: password.to_owned(),
                };
                async move {
                    AccountServiceClient::new(channel)
                        .create_account(request)
                        .await
                }
            })
            .await;
        match result {
            Ok(account) => Ok(account.account_id),
            Err(end) => anyhow::bail!("CreateAccount failed: {end:?}"),
        }
    }

    /// `Some(valid)`, or `None` if the service could not be asked.
    pub async fn logs_in(&self, login: &str, password: &str) -> Option<bool> {
        let (result, _) = self
            .step("VerifyPassword", |channel, _| {
                let request = VerifyPasswordRequest {
                    login_id: login.to_owned(),
                    password: password.to_owned(),
                };
                async move {
                    AccountServiceClient::new(channel)
                        .verify_password(request)
                        .await
                }
            })
            .await;
        result.ok().map(|response| response.valid)
    }

    pub async fn run_recovery(&self, index: usize, account: &Account) -> Recovery {
        let mut recovery = Recovery {
            account: index,
            flow_id: None,
            sends_ok: 0,
            sends_ambiguous: 0,
            password: new_password(),
            reset: ResetEnd::NotTried,
            replayed_code_worked: false,
            replayed_token_worked: false,
            replay_password: new_password(),
            ended: None,
            unavailable_took_effect: 0,
        };
        let login = account.login.clone();

        let (started, _) = self
            .step("StartRecovery", |channel, _| {
                let request = timed(StartRecoveryRequest {
                    login_id: login.clone(),
                    locale: "en".to_owned(),
                    ..Default::default()
                });
                async move {
                    RecoveryServiceClient::new(channel)
                        .start_recovery(request)
                        .await
                }
            })
            .await;
        let flow_id = match started.map(|r| r.flow.map(|flow| flow.flow_id)) {
            Ok(Some(flow_id)) => flow_id,
            Ok(None) => {
                recovery.ended = Some("StartRecovery answered without a flow".into());
                return recovery;
            }
            Err(end) => {
                recovery.ended = Some(format!("StartRecovery: {end:?}"));
                return recovery;
            }
        };
        recovery.flow_id = Some(flow_id.clone());

        let codes_before = self.codes(&login).len();
        let (sent, ambiguous, unavailable) = self
            .step_seen("SendVerificationCode", |channel, _| {
                let request = timed(SendVerificationCodeRequest {
                    flow_id: flow_id.clone(),
                    channel: ProtoChannel::Email as i32,
                });
                async move {
                    RecoveryServiceClient::new(channel)
                        .send_verification_code(request)
                        .await
                }
            })
            .await;
        match sent {
            Ok(_) if ambiguous => recovery.sends_ambiguous += 1,
            Ok(_) => recovery.sends_ok += 1,
            // An unanswered try may have sent the code: the retry then meets the cooldown.
            Err(StepEnd::Error {
                reason,
                ambiguous: true,
            }) if reason == "RESEND_TOO_SOON" => {
                recovery.sends_ambiguous += 1;
            }
            // A try answered UNAVAILABLE took effect after all (its write reached Redis, the
            // answer did not come back): counted, and the code may still arrive.
            Err(StepEnd::Error { reason, .. }) if reason == "RESEND_TOO_SOON" && unavailable => {
                recovery.sends_ambiguous += 1;
                recovery.unavailable_took_effect += 1;
            }
            Err(end) => {
                if ambiguous {
                    recovery.sends_ambiguous += 1;
                }
                recovery.ended = Some(format!("SendVerificationCode: {end:?}"));
                return recovery;
            }
        }

        // The code arrives through the durable queue and the real SMTP sink.
        let deadline = Instant::now() + self.step_deadline;
        let code = loop {
            let codes = self.codes(&login);
            if codes.len() > codes_before {
                break codes.last().cloned();
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(code) = code else {
            recovery.ended = Some("no code mail within the step deadline".into());
            return recovery;
        };

        let (verified, _) = self
            .step("VerifyCode", |channel, _| {
                let request = timed(VerifyCodeRequest {
                    flow_id: flow_id.clone(),
                    code: code.clone(),
                });
                async move {
                    RecoveryServiceClient::new(channel)
                        .verify_code(request)
                        .await
                }
            })
            .await;
        let token = match verified {
            Ok(response) => response.reset_token,
            Err(end) => {
                recovery.ended = Some(format!("VerifyCode: {end:?}"));
                return recovery;
            }
        };

        let password = recovery.password.clone();
        let (reset, ambiguous) = self
            .step("ResetPassword", |channel, replica| {
                let request = timed(ResetPasswordRequest {
                    reset_token: token.clone(),
                    new_password: password.clone(),
                    new_password_confirmation: password.clone(),
                });
                let in_flight = &self.resets_in_flight[replica];
                async move {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let result = RecoveryServiceClient::new(channel)
                        .reset_password(request)
                        .await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    result
                }
            })
            .await;
        recovery.reset = match reset {
            Ok(_) => ResetEnd::Ok,
            Err(_) if ambiguous => ResetEnd::Ambiguous,
            Err(StepEnd::Error { reason, .. }) => ResetEnd::Refused(reason),
            Err(StepEnd::GaveUp { .. }) => {
                ResetEnd::Refused("UNAVAILABLE until the deadline".into())
            }
        };
        if recovery.reset != ResetEnd::Ok {
            recovery.ended = Some(format!("ResetPassword: {:?}", recovery.reset));
            return recovery;
        }

        // Replays: a used code and a used token must never work again.
        let (replayed, _) = self
            .step("VerifyCode(replay)", |channel, _| {
                let request = timed(VerifyCodeRequest {
                    flow_id: flow_id.clone(),
                    code: code.clone(),
                });
                async move {
                    RecoveryServiceClient::new(channel)
                        .verify_code(request)
                        .await
                }
            })
            .await;
        recovery.replayed_code_worked = replayed.is_ok();
        let replay_password = recovery.replay_password.clone();
        let (replayed, _) = self
            .step("ResetPassword(replay)", |channel, _| {
                let request = timed(ResetPasswordRequest {
                    reset_token: token.clone(),
                    new_password: replay_password.clone(),
                    new_password_confirmation: replay_password.clone(),
                });
                async move {
                    RecoveryServiceClient::new(channel)
                        .reset_password(request)
                        .await
                }
            })
            .await;
        recovery.replayed_token_worked = replayed.is_ok();
        recovery
    }

    fn codes(&self, address: &str) -> Vec<String> {
        self.mailboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .codes_for(address)
    }
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Service errors carry an `ErrorInfo`; anything without one never reached the service's
/// answer path (refused, reset, timed out on the client).
fn classify(status: &Status) -> Outcome {
    match status.get_error_details().error_info() {
        Some(info) => Outcome::Service {
            code: status.code(),
            reason: info.reason.clone(),
        },
        None => Outcome::Transport {
            code: status.code(),
        },
    }
}

/// Unique, strong, never containing a login: `Soak-<16 hex>-<16 hex>!`.
pub fn new_password() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Soak-{}-{}!", &id[..16], &id[16..])
}
