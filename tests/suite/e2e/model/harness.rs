//! Runs a case against the real server (port 0, generated clients, manual clock) and checks
//! every answer, every mail and the final state against the model.
//!
//! Concurrency: the calls of one step run at once, so the model keeps every *world* (model
//! state) that some order of those calls explains; a step fails when no order of the calls, from
//! no world still possible, gives the answers the server gave.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use recovery_service::clock::Clock as _;
use recovery_service::notify::MessageKind;
use recovery_service::proto::{self, FlowState as WireState};
use tonic::Code;
use tonic_types::StatusExt;
use unicode_normalization::UnicodeNormalization;

use super::contract::{
    Answer, CaptchaArg, CodeArg, Detail, FlowArg, Invocation, Key, LoginArg, Mail, MailKind,
    Millis, Op, PasswordArg, SecretArg, Settings, Stage, View, World, orders,
};
use super::script::{
    CaptchaRef, ChannelRef, CodeRef, FlowRef, KNOWN, LoginRef, PASSWORDS, PasswordRef, ReportRef,
    SLOTS, Spelling, Step, TokenRef,
};
use crate::common::{self, CAPTCHA_ANSWER, TestApp};

/// Worlds kept at most: concurrent calls that commute leave one world; this bounds the rare
/// steps whose orders cannot be told apart by their answers.
const MAX_WORLDS: usize = 64;

/// The strong passwords a step may pick (zxcvbn 4, not common, containing no login).
const STRONG: [&str; PASSWORDS as usize] = [
    "Old-Granite-Harbor-73!",
    "New-Velvet-Lantern-58?",
    "Quiet-Copper-Meadow-41#",
    "Brisk-Saffron-Tunnel-92%",
    "Lunar-Thistle-Orchard-17&",
    "Amber-Falcon-Glacier-64*",
];
const WEAK: &str = "password";

/// Client addresses never repeat in a process: every client of every case has its own /24, so
/// no per-IP (or per-network) counter of one case is seen by another on a shared Redis.
static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

fn fresh_address() -> (u32, String) {
    let n = NEXT_NETWORK.fetch_add(1, Ordering::Relaxed);
    // 20.0.0.0 - 99.255.255.0: public-looking, never loopback or a trusted proxy.
    let address = format!("{}.{}.{}.1", 20 + (n >> 16) % 80, (n >> 8) & 0xff, n & 0xff);
    (n, address)
}

/// What the server said, in the model's terms, plus what it handed out.
struct Observed {
    answer: Answer,
    /// A flow id (StartRecovery, AdminStartRecovery), a reset token (VerifyCode), a code
    /// (AdminStartRecovery with `return_code`), an account id (CreateAccount).
    flow_id: Option<String>,
    token: Option<String>,
    code: Option<String>,
    account_id: Option<String>,
}

impl Observed {
    fn answer(answer: Answer) -> Self {
        Self {
            answer,
            flow_id: None,
            token: None,
            code: None,
            account_id: None,
        }
    }
}

/// A call ready to send: the model's view of it and the concrete request.
struct Prepared {
    invocation: Invocation,
    client_address: String,
    request: Request,
}

enum Request {
    CreateCaptcha,
    Start {
        login: String,
        captcha: CaptchaRequest,
    },
    Get(String),
    Send(String, proto::Channel),
    Verify(String, String),
    Reset(String, String, String),
    Cancel(String),
    Report(String),
    AdminStart(String, bool),
    VerifyPassword(String, String),
    CreateAccount(String),
}

enum CaptchaRequest {
    Fresh { answer: &'static str },
    Existing(String),
    Missing,
}

#[derive(Default, Clone)]
struct FlowArtifacts {
    id: String,
    slot: u8,
    /// Codes known for the flow (mailed or returned), oldest first, with the call that made each.
    codes: Vec<(Key, String)>,
}

/// One case against one server.
pub struct Case<'a> {
    app: &'a TestApp,
    settings: &'a Settings,
    tag: String,
    t0: DateTime<Utc>,
    next_key: Key,
    clients: Vec<(u32, String)>,
    /// Account ids and registered addresses per slot.
    accounts: BTreeMap<u8, (String, String)>,
    flows: Vec<(Key, FlowArtifacts)>,
    tokens: Vec<(Key, String)>,
    captchas: Vec<(Key, String)>,
    reports: Vec<(Key, String)>,
    mails_seen: usize,
    worlds: Vec<World>,
    /// What happened so far, for the failure message.
    log: String,
}

impl<'a> Case<'a> {
    pub async fn start(app: &'a TestApp, settings: &'a Settings) -> Self {
        let tag = format!("{:08x}", rand_u32());
        let clients = (0..super::script::CLIENTS)
            .map(|_| fresh_address())
            .collect();
        let mut case = Self {
            app,
            settings,
            tag,
            t0: app.clock.now(),
            next_key: 0,
            clients,
            accounts: BTreeMap::new(),
            flows: Vec::new(),
            tokens: Vec::new(),
            captchas: Vec::new(),
            reports: Vec::new(),
            mails_seen: app.notifier.messages().len(),
            worlds: vec![World::new(KNOWN)],
            log: String::new(),
        };
        for slot in 0..KNOWN {
            let login = case.spell(LoginRef {
                slot,
                spelling: Spelling::AsRegistered,
            });
            let id = app.create_account(&login).await;
            case.accounts.insert(slot, (id, login));
        }
        case
    }

    /// The login of `slot` as `spelling` writes it. Every slot has an "é" (for the decomposed
    /// form) and an "ss" (for "ß").
    fn spell(&self, login: LoginRef) -> String {
        let local = format!("Zoé.Strasse{}x{}", login.slot, self.tag);
        let base = format!("{local}@Example.com");
        match login.spelling {
            Spelling::AsRegistered => base,
            Spelling::Lower => base.to_lowercase(),
            Spelling::Upper => base.to_uppercase(),
            Spelling::Padded => format!(" \t{base}\u{a0} "),
            Spelling::Eszett => base.replace("Strasse", "Straße"),
            Spelling::FullWidth => {
                let wide: String = local
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
                        } else {
                            c
                        }
                    })
                    .collect();
                format!("{wide}@Example.com")
            }
            Spelling::Decomposed => base.nfd().collect(),
            Spelling::Malformed => format!("zoe-strasse-{}-no-at-sign", self.tag),
        }
    }

    fn offset(&self, at: Option<&prost_types::Timestamp>) -> Option<Millis> {
        let at = at?;
        let at = DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)?;
        Some((at - self.t0).num_milliseconds())
    }

    fn view_of(&self, flow: Option<&proto::RecoveryFlow>) -> Result<View, String> {
        let flow = flow.ok_or("no flow in the answer")?;
        let stage = match flow.state() {
            WireState::ChooseMethod => Stage::ChooseMethod,
            WireState::CodeSent => Stage::CodeSent,
            WireState::Verified => Stage::Verified,
            WireState::Completed => Stage::Completed,
            other => return Err(format!("flow state {other:?}")),
        };
        let method_ok = flow.methods.len() == 1
            && flow.methods[0].channel() == proto::Channel::Email
            && flow.methods[0].masked_destination.contains('*');
        if !method_ok || uuid::Uuid::try_parse(&flow.flow_id).is_err() {
            return Err(format!("malformed flow: {flow:?}"));
        }
        Ok(View {
            stage,
            attempts_left: flow.attempts_left,
            expires_at: self
                .offset(flow.expires_at.as_ref())
                .ok_or("flow without expires_at")?,
            resend_available_at: self.offset(flow.resend_available_at.as_ref()),
        })
    }

    // ---- resolving references -------------------------------------------------------------

    fn key(&mut self) -> Key {
        self.next_key += 1;
        self.next_key
    }

    fn recent<T: Clone>(items: &[(Key, T)], n: u8) -> Option<(Key, T)> {
        let len = items.len();
        (len > 0).then(|| items[len - 1 - usize::from(n) % len].clone())
    }

    fn resolve_login(&self, login: LoginRef) -> (LoginArg, String) {
        (
            LoginArg {
                slot: login.slot,
                valid: login.spelling != Spelling::Malformed,
            },
            self.spell(login),
        )
    }

    fn resolve_flow(&self, flow: FlowRef) -> (FlowArg, String, Option<usize>) {
        match flow {
            FlowRef::Recent(n) if !self.flows.is_empty() => {
                let index = self.flows.len() - 1 - usize::from(n) % self.flows.len();
                let (key, artifacts) = &self.flows[index];
                (FlowArg::Issued(*key), artifacts.id.clone(), Some(index))
            }
            FlowRef::Recent(_) | FlowRef::Unknown => {
                (FlowArg::Unknown, uuid::Uuid::new_v4().to_string(), None)
            }
            FlowRef::Malformed => (FlowArg::Malformed, "not-a-flow".into(), None),
        }
    }

    fn resolve_code(&self, flow: Option<usize>, code: CodeRef) -> (CodeArg, String) {
        let codes = flow.map(|i| &self.flows[i].1.codes);
        let known = |(key, text): &(Key, String)| (CodeArg::Issued(*key), text.clone());
        let wrong = || {
            let taken: Vec<&String> = self
                .flows
                .iter()
                .flat_map(|(_, f)| f.codes.iter().map(|(_, text)| text))
                .collect();
            let text = (0..)
                .map(|n: u32| format!("{:06}", (u64::from(rand_u32()) + u64::from(n)) % 1_000_000))
                .find(|candidate| !taken.contains(&candidate))
                .unwrap_or_default();
            (CodeArg::Wrong, text)
        };
        match code {
            CodeRef::Latest => codes.and_then(|c| c.last()).map_or_else(wrong, known),
            CodeRef::LatestSpaced => codes.and_then(|c| c.last()).map_or_else(wrong, |code| {
                let (arg, text) = known(code);
                if text.contains('-') {
                    // A long code as a person might type it: lower case, no hyphens.
                    (arg, text.replace('-', "").to_lowercase())
                } else {
                    (arg, format!("{} {}", &text[..3], &text[3..]))
                }
            }),
            CodeRef::Previous => codes
                .and_then(|c| c.len().checked_sub(2).map(|i| &c[i]))
                .map_or_else(wrong, known),
            CodeRef::OtherFlow => {
                let slot = flow.map(|i| self.flows[i].1.slot);
                self.flows
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(|(i, (_, f))| Some(*i) != flow && Some(f.slot) == slot)
                    .find_map(|(_, (_, f))| f.codes.last())
                    .map_or_else(wrong, known)
            }
            CodeRef::Wrong => wrong(),
            CodeRef::WrongLong => {
                let taken: Vec<&String> = self
                    .flows
                    .iter()
                    .flat_map(|(_, f)| f.codes.iter().map(|(_, text)| text))
                    .collect();
                let alphabet = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
                let text = (0..)
                    .map(|_| {
                        let symbols: String = (0..20)
                            .map(|_| char::from(alphabet[(rand_u32() % 32) as usize]))
                            .collect();
                        common::group_long(&symbols)
                    })
                    .find(|candidate| !taken.contains(&candidate))
                    .unwrap_or_default();
                (CodeArg::Wrong, text)
            }
            CodeRef::WrongLength => (CodeArg::WrongLength, "1234567".into()),
            CodeRef::Malformed => (CodeArg::Malformed, "12ab56".into()),
        }
    }

    fn prepare(&mut self, client: u8, call: &super::script::Call) -> Prepared {
        use super::script::Call;
        let key = self.key();
        let (client_id, client_address) = self.clients[usize::from(client)].clone();
        let forged_token = || {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
        };
        let (op, request) = match *call {
            Call::CreateCaptcha => (Op::CreateCaptcha, Request::CreateCaptcha),
            Call::StartRecovery { login, captcha } => {
                let (login, text) = self.resolve_login(login);
                let (captcha, request) = match captcha {
                    CaptchaRef::Fresh => (
                        CaptchaArg::Fresh { right: true },
                        CaptchaRequest::Fresh {
                            answer: CAPTCHA_ANSWER,
                        },
                    ),
                    CaptchaRef::FreshWrong => (
                        CaptchaArg::Fresh { right: false },
                        CaptchaRequest::Fresh { answer: "000000" },
                    ),
                    CaptchaRef::Recent(n) => match Self::recent(&self.captchas, n) {
                        Some((made, id)) => (CaptchaArg::Made(made), CaptchaRequest::Existing(id)),
                        None => (
                            CaptchaArg::Fresh { right: true },
                            CaptchaRequest::Fresh {
                                answer: CAPTCHA_ANSWER,
                            },
                        ),
                    },
                    CaptchaRef::Missing => (CaptchaArg::Missing, CaptchaRequest::Missing),
                };
                (
                    Op::StartRecovery { login, captcha },
                    Request::Start {
                        login: text,
                        captcha: request,
                    },
                )
            }
            Call::GetRecoveryFlow { flow } => {
                let (flow, id, _) = self.resolve_flow(flow);
                (Op::GetRecoveryFlow { flow }, Request::Get(id))
            }
            Call::SendVerificationCode { flow, channel } => {
                let (flow, id, _) = self.resolve_flow(flow);
                let wire = match channel {
                    ChannelRef::Unspecified => proto::Channel::Unspecified,
                    ChannelRef::Email => proto::Channel::Email,
                    ChannelRef::Sms => proto::Channel::Sms,
                };
                (
                    Op::SendVerificationCode { flow, channel },
                    Request::Send(id, wire),
                )
            }
            Call::VerifyCode { flow, code } => {
                let (flow, id, index) = self.resolve_flow(flow);
                let (code, text) = self.resolve_code(index, code);
                (Op::VerifyCode { flow, code }, Request::Verify(id, text))
            }
            Call::ResetPassword {
                token,
                password,
                confirmation_matches,
            } => {
                let (token, text) = match token {
                    TokenRef::Recent(n) => match Self::recent(&self.tokens, n) {
                        Some((made, text)) => (SecretArg::Issued(made), text),
                        None => (SecretArg::Forged, forged_token()),
                    },
                    TokenRef::Forged => (SecretArg::Forged, forged_token()),
                    TokenRef::Malformed => (SecretArg::Malformed, "not-a-token".into()),
                };
                let (password, new) = match password {
                    PasswordRef::Strong(n) => (
                        PasswordArg::Strong(n % PASSWORDS),
                        STRONG[usize::from(n % PASSWORDS)],
                    ),
                    PasswordRef::Weak => (PasswordArg::Weak, WEAK),
                };
                let confirmation = if confirmation_matches {
                    new.to_owned()
                } else {
                    format!("{new}x")
                };
                (
                    Op::ResetPassword {
                        token,
                        password,
                        confirmation_matches,
                    },
                    Request::Reset(text, new.to_owned(), confirmation),
                )
            }
            Call::CancelRecovery { flow } => {
                let (flow, id, _) = self.resolve_flow(flow);
                (Op::CancelRecovery { flow }, Request::Cancel(id))
            }
            Call::ReportUnrequestedRecovery { report } => {
                let (report, text) = match report {
                    ReportRef::Recent(n) => match Self::recent(&self.reports, n) {
                        Some((made, text)) => (SecretArg::Issued(made), text),
                        None => (SecretArg::Forged, forged_report()),
                    },
                    ReportRef::Forged => (SecretArg::Forged, forged_report()),
                    ReportRef::Malformed => (SecretArg::Malformed, "not-a-report-code".into()),
                };
                (
                    Op::ReportUnrequestedRecovery { report },
                    Request::Report(text),
                )
            }
            Call::AdminStartRecovery { login, return_code } => {
                let (login, text) = self.resolve_login(login);
                (
                    Op::AdminStartRecovery { login, return_code },
                    Request::AdminStart(text, return_code),
                )
            }
            Call::VerifyPassword { login, password } => {
                let (login, text) = self.resolve_login(login);
                let (password, plain) = match password {
                    PasswordRef::Strong(n) => (
                        PasswordArg::Strong(n % PASSWORDS),
                        STRONG[usize::from(n % PASSWORDS)],
                    ),
                    PasswordRef::Weak => (PasswordArg::Weak, WEAK),
                };
                (
                    Op::VerifyPassword { login, password },
                    Request::VerifyPassword(text, plain.to_owned()),
                )
            }
            Call::CreateAccount { login } => {
                let (login, text) = self.resolve_login(login);
                (Op::CreateAccount { login }, Request::CreateAccount(text))
            }
        };
        Prepared {
            invocation: Invocation {
                key,
                client: client_id,
                op,
            },
            client_address,
            request,
        }
    }
}

fn forged_report() -> String {
    format!(
        "{:032x}",
        u128::from(rand_u32()) << 64 | u128::from(rand_u32())
    )
}

/// The code of a code mail: the long one when it carries one, else the six digits.
fn mailed_code(mail: &recovery_service::notify::Email) -> String {
    if common::has_long_code(mail) {
        // Reached only once a guess budget is spent: counted so a run shows it got there.
        *TALLY
            .lock()
            .unwrap()
            .entry(format!("{:<26} long code", "(code mail)"))
            .or_default() += 1;
        common::long_code_in(mail)
    } else {
        common::code_in(mail)
    }
}

fn rand_u32() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The gRPC code each reason must come with (one code per reason).
fn code_of(reason: &str) -> Option<Code> {
    Some(match reason {
        "INVALID_ARGUMENT" | "CAPTCHA_INVALID" | "CODE_INVALID" | "PASSWORD_MISMATCH"
        | "PASSWORD_POLICY" => Code::InvalidArgument,
        "FLOW_NOT_FOUND" | "ACCOUNT_NOT_FOUND" => Code::NotFound,
        "FLOW_STATE" | "CODE_EXPIRED" | "ATTEMPTS_EXHAUSTED" => Code::FailedPrecondition,
        "RESEND_TOO_SOON" | "RATE_LIMITED" => Code::ResourceExhausted,
        "TOKEN_INVALID" => Code::Unauthenticated,
        "ACCOUNT_EXISTS" => Code::AlreadyExists,
        _ => return None,
    })
}

/// A refusal in the model's terms (reason and the detail that matters for it).
fn refusal(status: &tonic::Status) -> Answer {
    let details = status.get_error_details();
    let Some(info) = details.error_info() else {
        return Answer::Refused {
            reason: "NO_ERROR_INFO",
            detail: Detail::State(leak(format!("{:?} {}", status.code(), status.message()))),
        };
    };
    let reason: &'static str = leak(info.reason.clone());
    if code_of(reason) != Some(status.code()) || info.domain != "recovery.identity" {
        return Answer::Refused {
            reason: "WRONG_CODE_FOR_REASON",
            detail: Detail::State(leak(format!("{:?} {reason}", status.code()))),
        };
    }
    let meta = |key: &str| info.metadata.get(key).cloned().unwrap_or_default();
    let fields = || {
        details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| leak(v.field.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let detail = match reason {
        "INVALID_ARGUMENT" => Detail::Fields(fields()),
        "CODE_INVALID" => Detail::AttemptsLeft(meta("attempts_left").parse().unwrap_or(u32::MAX)),
        "FLOW_STATE" => Detail::State(leak(meta("state"))),
        "RATE_LIMITED" => Detail::Scope(leak(meta("scope"))),
        "RESEND_TOO_SOON" => {
            Detail::RetryAfterSeconds(meta("retry_after_seconds").parse().unwrap_or(u64::MAX))
        }
        "PASSWORD_POLICY" => {
            let reasons: Vec<String> = details
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| v.reason.clone())
                        .collect()
                })
                .unwrap_or_default();
            if reasons.is_empty() {
                Detail::State("no violations listed")
            } else {
                Detail::Reused(reasons.iter().any(|r| r == "PASSWORD_REUSED"))
            }
        }
        _ => Detail::None,
    };
    Answer::Refused { reason, detail }
}

/// Reasons and field names are few and short; leaking them keeps `Answer` comparable with the
/// model's `&'static str`s.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// How often each RPC got each answer in this process: printed after a run, so a reader can see
/// which paths the run reached (a budget never spent is a budget never tested).
static TALLY: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn tally(op: &Op, answer: &Answer) {
    let name = format!("{op:?}");
    let name = name.split([' ', '{', '(']).next().unwrap_or_default();
    let outcome = match answer {
        Answer::Refused { reason, detail } => match detail {
            Detail::Scope(scope) => format!("{reason} {scope}"),
            Detail::State(state) => format!("{reason} {state}"),
            Detail::Reused(true) => format!("{reason} reused"),
            _ => (*reason).to_owned(),
        },
        _ => "OK".to_owned(),
    };
    *TALLY
        .lock()
        .unwrap()
        .entry(format!("{name:<26} {outcome}"))
        .or_default() += 1;
}

pub fn tally_report() -> String {
    TALLY
        .lock()
        .unwrap()
        .iter()
        .map(|(what, n)| format!("  {n:>6}  {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` names `address` as a whole (not as part of a longer address).
fn mentions(text: &str, address: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_digit() && c != '.');
    text.match_indices(address).any(|(at, _)| {
        boundary(text[..at].chars().next_back())
            && boundary(text[at + address.len()..].chars().next())
    })
}

fn with_client<T>(message: T, address: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = address.parse() {
        request.metadata_mut().insert("x-forwarded-for", value);
    }
    request
}

impl Case<'_> {
    async fn send(&self, prepared: &Prepared) -> (Observed, Option<String>) {
        let mut recovery = self.app.recovery.clone();
        let mut accounts = self.app.accounts.clone();
        let address = prepared.client_address.as_str();
        let refused = |status: tonic::Status| Observed::answer(refusal(&status));
        let mut captcha_id = None;
        let observed = match &prepared.request {
            Request::CreateCaptcha => {
                match recovery
                    .create_captcha(with_client(proto::CreateCaptchaRequest {}, address))
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        let shape_ok = !r.image_png.is_empty()
                            && uuid::Uuid::try_parse(&r.captcha_id).is_ok()
                            && self.offset(r.expires_at.as_ref()).is_some();
                        captcha_id = Some(r.captcha_id);
                        Observed::answer(if shape_ok {
                            Answer::Captcha
                        } else {
                            Answer::Refused {
                                reason: "MALFORMED_CAPTCHA",
                                detail: Detail::None,
                            }
                        })
                    }
                    Err(status) => refused(status),
                }
            }
            Request::Start { login, captcha } => {
                let (id, answer) = match captcha {
                    CaptchaRequest::Fresh { answer } => {
                        match recovery
                            .create_captcha(with_client(proto::CreateCaptchaRequest {}, address))
                            .await
                        {
                            Ok(r) => {
                                let id = r.into_inner().captcha_id;
                                captcha_id = Some(id.clone());
                                (id, (*answer).to_owned())
                            }
                            Err(status) => return (refused(status), None),
                        }
                    }
                    CaptchaRequest::Existing(id) => (id.clone(), CAPTCHA_ANSWER.to_owned()),
                    CaptchaRequest::Missing => (String::new(), String::new()),
                };
                let request = proto::StartRecoveryRequest {
                    login_id: login.clone(),
                    captcha_id: id,
                    captcha_answer: answer,
                    locale: "en".into(),
                    ..Default::default()
                };
                match recovery.start_recovery(with_client(request, address)).await {
                    Ok(r) => self.flow_observed(r.into_inner().flow),
                    Err(status) => refused(status),
                }
            }
            Request::Get(flow_id) => {
                let request = proto::GetRecoveryFlowRequest {
                    flow_id: flow_id.clone(),
                };
                match recovery
                    .get_recovery_flow(with_client(request, address))
                    .await
                {
                    Ok(r) => self.flow_observed(Some(r.into_inner())),
                    Err(status) => refused(status),
                }
            }
            Request::Send(flow_id, channel) => {
                let request = proto::SendVerificationCodeRequest {
                    flow_id: flow_id.clone(),
                    channel: (*channel).into(),
                };
                match recovery
                    .send_verification_code(with_client(request, address))
                    .await
                {
                    Ok(r) => {
                        let mut observed = self.flow_observed(r.into_inner().flow);
                        observed.flow_id = None;
                        observed
                    }
                    Err(status) => refused(status),
                }
            }
            Request::Verify(flow_id, code) => {
                let request = proto::VerifyCodeRequest {
                    flow_id: flow_id.clone(),
                    code: code.clone(),
                };
                match recovery.verify_code(with_client(request, address)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let shape_ok = r.reset_token.len() == 43;
                        match self.offset(r.expires_at.as_ref()) {
                            Some(token_expires_at) if shape_ok => Observed {
                                token: Some(r.reset_token),
                                ..Observed::answer(Answer::Verified { token_expires_at })
                            },
                            _ => Observed::answer(Answer::Refused {
                                reason: "MALFORMED_TOKEN_ANSWER",
                                detail: Detail::None,
                            }),
                        }
                    }
                    Err(status) => refused(status),
                }
            }
            Request::Reset(token, password, confirmation) => {
                let request = proto::ResetPasswordRequest {
                    reset_token: token.clone(),
                    new_password: password.clone(),
                    new_password_confirmation: confirmation.clone(),
                };
                match recovery.reset_password(with_client(request, address)).await {
                    Ok(r) => match self.offset(r.into_inner().password_changed_at.as_ref()) {
                        Some(changed_at) => Observed::answer(Answer::Reset { changed_at }),
                        None => Observed::answer(Answer::Refused {
                            reason: "MALFORMED_RESET_ANSWER",
                            detail: Detail::None,
                        }),
                    },
                    Err(status) => refused(status),
                }
            }
            Request::Cancel(flow_id) => {
                let request = proto::CancelRecoveryRequest {
                    flow_id: flow_id.clone(),
                };
                match recovery
                    .cancel_recovery(with_client(request, address))
                    .await
                {
                    Ok(_) => Observed::answer(Answer::Done),
                    Err(status) => refused(status),
                }
            }
            Request::Report(code) => {
                let request = proto::ReportUnrequestedRecoveryRequest {
                    report_code: code.clone(),
                };
                match recovery
                    .report_unrequested_recovery(with_client(request, address))
                    .await
                {
                    Ok(_) => Observed::answer(Answer::Done),
                    Err(status) => refused(status),
                }
            }
            Request::AdminStart(login, return_code) => {
                let request = proto::AdminStartRecoveryRequest {
                    login_id: login.clone(),
                    return_code: *return_code,
                    locale: "en".into(),
                };
                match accounts
                    .admin_start_recovery(with_client(request, address))
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        let code_shape_ok = if *return_code {
                            r.code.len() == 6 && r.code.bytes().all(|b| b.is_ascii_digit())
                        } else {
                            r.code.is_empty()
                        };
                        let flow_id = r.flow.as_ref().map(|f| f.flow_id.clone());
                        match self.view_of(r.flow.as_ref()) {
                            Ok(flow) if code_shape_ok => Observed {
                                flow_id,
                                code: (*return_code).then_some(r.code),
                                ..Observed::answer(Answer::Admin {
                                    flow,
                                    code_returned: *return_code,
                                })
                            },
                            _ => Observed::answer(Answer::Refused {
                                reason: "MALFORMED_ADMIN_ANSWER",
                                detail: Detail::None,
                            }),
                        }
                    }
                    Err(status) => refused(status),
                }
            }
            Request::VerifyPassword(login, password) => {
                let request = proto::VerifyPasswordRequest {
                    login_id: login.clone(),
                    password: password.clone(),
                };
                match accounts
                    .verify_password(with_client(request, address))
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        let slot = self
                            .accounts
                            .iter()
                            .find(|(_, (id, _))| *id == r.account_id)
                            .map(|(slot, _)| *slot);
                        match (r.valid, slot) {
                            (true, Some(slot)) => Observed::answer(Answer::Login {
                                account: Some(slot),
                            }),
                            (false, None) if r.account_id.is_empty() => {
                                Observed::answer(Answer::Login { account: None })
                            }
                            _ => Observed::answer(Answer::Refused {
                                reason: "MALFORMED_LOGIN_ANSWER",
                                detail: Detail::None,
                            }),
                        }
                    }
                    Err(status) => refused(status),
                }
            }
            Request::CreateAccount(login) => {
                let request = proto::CreateAccountRequest {
                    login_id: login.clone(),
                    password: STRONG[0].into(),
                    ..Default::default()
                };
                match accounts.create_account(request).await {
                    Ok(r) => Observed {
                        account_id: Some(r.into_inner().account_id),
                        ..Observed::answer(Answer::AccountCreated)
                    },
                    Err(status) => refused(status),
                }
            }
        };
        (observed, captcha_id)
    }

    fn flow_observed(&self, flow: Option<proto::RecoveryFlow>) -> Observed {
        match self.view_of(flow.as_ref()) {
            Ok(view) => Observed {
                flow_id: flow.map(|f| f.flow_id),
                ..Observed::answer(Answer::Flow(view))
            },
            Err(why) => Observed::answer(Answer::Refused {
                reason: "MALFORMED_FLOW",
                detail: Detail::State(leak(why)),
            }),
        }
    }

    /// Runs one step and checks it; `Err` explains the first disagreement.
    pub async fn step(&mut self, number: usize, step: &Step) -> Result<(), String> {
        let _ = writeln!(self.log, "{number:>3}. {step}");
        match step {
            Step::Advance(seconds) => {
                self.app
                    .clock
                    .advance(std::time::Duration::from_secs(*seconds));
                for world in &mut self.worlds {
                    world.advance(self.settings, *seconds);
                }
                Ok(())
            }
            Step::Calls(calls) => {
                let prepared: Vec<Prepared> = calls
                    .iter()
                    .map(|(client, call)| self.prepare(*client, call))
                    .collect();
                self.run_concurrently(&prepared).await?;
                self.probe_flows().await
            }
        }
    }

    async fn run_concurrently(&mut self, prepared: &[Prepared]) -> Result<(), String> {
        // A report is sent once the step's other calls have answered: a report racing a code
        // send or a helpdesk start is not modelled yet (the flows it ends, the mails dropped
        // because of it); see docs/development.md. Its place in the step's orders stays open.
        let (others, reports): (Vec<usize>, Vec<usize>) = (0..prepared.len()).partition(|&i| {
            !matches!(
                prepared[i].invocation.op,
                Op::ReportUnrequestedRecovery { .. }
            )
        });
        let mut answered: Vec<Option<(Observed, Option<String>)>> =
            (0..prepared.len()).map(|_| None).collect();
        for group in [others, reports] {
            let answers =
                futures_util::future::join_all(group.iter().map(|&i| self.send(&prepared[i])))
                    .await;
            for (i, answer) in group.into_iter().zip(answers) {
                answered[i] = Some(answer);
            }
        }
        let results: Vec<(Observed, Option<String>)> = answered.into_iter().flatten().collect();
        let invocations: Vec<&Invocation> = prepared.iter().map(|p| &p.invocation).collect();
        for (inv, (observed, _)) in invocations.iter().zip(&results) {
            tally(&inv.op, &observed.answer);
        }
        for (p, (observed, _)) in prepared.iter().zip(&results) {
            let _ = writeln!(self.log, "       -> {:?}", observed.answer);
            let _ = p;
        }
        let mut next = Vec::new();
        for world in &self.worlds {
            for order in orders(invocations.len()) {
                // Each VerifyCode or start of a step of several calls may have read what it
                // reads as the step found it (see `World::apply_reading`): try every choice.
                let stale: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| {
                        invocations.len() > 1
                            && matches!(
                                invocations[i].op,
                                Op::VerifyCode { .. }
                                    | Op::StartRecovery { .. }
                                    | Op::AdminStartRecovery { .. }
                            )
                    })
                    .collect();
                for mask in 0..(1u32 << stale.len()) {
                    let mut candidate = world.clone();
                    let fits = order.iter().all(|&i| {
                        let read = stale
                            .iter()
                            .position(|&s| s == i)
                            .filter(|bit| mask & (1 << bit) != 0)
                            .map(|_| world);
                        candidate.apply_reading(self.settings, invocations[i], read)
                            == results[i].0.answer
                    });
                    if fits && !next.contains(&candidate) {
                        next.push(candidate);
                    }
                }
            }
        }
        if next.is_empty() {
            return Err(self.explain(&invocations, &results));
        }
        next.truncate(MAX_WORLDS);
        self.worlds = next;
        // What the server handed out becomes something later steps can use.
        let mut mails_due = false;
        for (p, (observed, captcha_id)) in prepared.iter().zip(results) {
            let key = p.invocation.key;
            if let Some(id) = captcha_id {
                self.captchas.push((key, id));
            }
            let started = match &p.invocation.op {
                Op::StartRecovery { login, .. } | Op::AdminStartRecovery { login, .. } => {
                    Some(login.slot)
                }
                _ => None,
            };
            if let (Some(id), Some(slot)) = (observed.flow_id, started) {
                let codes = observed
                    .code
                    .map(|code| vec![(key, code)])
                    .unwrap_or_default();
                self.flows.push((key, FlowArtifacts { id, slot, codes }));
            }
            if let Some(token) = observed.token {
                self.tokens.push((key, token));
            }
            if let (Some(id), Op::CreateAccount { login }) = (observed.account_id, &p.invocation.op)
            {
                let typed = match &p.request {
                    Request::CreateAccount(typed) => typed.trim().to_owned(),
                    _ => String::new(),
                };
                self.accounts.insert(login.slot, (id, typed));
            }
            mails_due |= matches!(
                (&p.invocation.op, &observed.answer),
                (Op::SendVerificationCode { .. }, Answer::Flow(_))
                    | (Op::AdminStartRecovery { .. }, Answer::Admin { .. })
                    | (Op::ResetPassword { .. }, Answer::Reset { .. })
            );
        }
        self.check_mails(prepared, mails_due).await
    }

    /// The mails delivered since the last check must be exactly those the model expects.
    async fn check_mails(&mut self, prepared: &[Prepared], due: bool) -> Result<(), String> {
        if due {
            self.drain().await;
        }
        let messages = self.app.notifier.messages();
        let new = messages.get(self.mails_seen..).unwrap_or_default().to_vec();
        self.mails_seen = messages.len();
        let mut actual = Vec::new();
        let mut texts = BTreeMap::new();
        for mail in &new {
            let Some(slot) = self
                .accounts
                .iter()
                .find(|(_, (_, address))| *address == mail.to)
                .map(|(slot, _)| *slot)
            else {
                // Another case's mail (a late notice); never this case's logins.
                if mail.to.contains(&self.tag) {
                    return Err(format!(
                        "a mail to {} that is no account's address",
                        mail.to
                    ));
                }
                continue;
            };
            let kind = match mail.kind {
                MessageKind::VerificationCode => {
                    let sender = prepared
                        .iter()
                        .find(|p| mentions(&mail.text, &p.client_address));
                    let Some(sender) = sender else {
                        return Err(format!(
                            "a code mail to account{slot} from no client of this step:\n{}",
                            mail.text
                        ));
                    };
                    texts.insert(
                        sender.invocation.key,
                        (mailed_code(mail), common::report_code_in(mail)),
                    );
                    MailKind::Code {
                        key: sender.invocation.key,
                        client: sender.invocation.client,
                    }
                }
                MessageKind::PasswordChanged => MailKind::PasswordChanged,
            };
            actual.push(Mail { slot, kind });
        }
        actual.sort();
        let before = self.worlds.len();
        let mut expected_seen = Vec::new();
        self.worlds.retain_mut(|world| {
            let mut expected = std::mem::take(&mut world.mails);
            expected.sort();
            let fits = expected == actual;
            expected_seen.push(expected);
            fits
        });
        if self.worlds.is_empty() {
            return Err(format!(
                "{}mails delivered: {actual:?}\nmails the model expects (one line per world of {before}):\n{}",
                self.log,
                expected_seen
                    .iter()
                    .map(|e| format!("  {e:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        for (key, (code, report)) in texts {
            let flow_key =
                prepared
                    .iter()
                    .find(|p| p.invocation.key == key)
                    .map(|p| match &p.invocation.op {
                        Op::SendVerificationCode {
                            flow: FlowArg::Issued(flow),
                            ..
                        } => *flow,
                        _ => key,
                    });
            if let Some(flow) = self.flows.iter_mut().find(|(k, _)| Some(*k) == flow_key) {
                flow.1.codes.push((key, code));
            }
            self.reports.push((key, report));
        }
        Ok(())
    }

    /// Waits until the delivery queue has nothing pending (polling often: most steps that mail
    /// anything wait here, and the queue drains in a few milliseconds).
    async fn drain(&self) {
        use recovery_service::db::entities::delivery;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        for _ in 0..2500 {
            let pending = delivery::Entity::find()
                .filter(delivery::Column::Status.eq("pending"))
                .count(self.app.database.connection())
                .await
                .unwrap_or(1);
            if pending == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// After every step, each flow handed out that still exists is read back (by a client of
    /// its own).
    async fn probe_flows(&mut self) -> Result<(), String> {
        let (client, address) = fresh_address();
        for index in 0..self.flows.len() {
            let (flow_key, artifacts) = &self.flows[index];
            let now = self.worlds[0].now;
            let exists = self
                .worlds
                .iter()
                .any(|w| w.flows.get(flow_key).is_some_and(|f| now < f.expires_at));
            if !exists {
                continue;
            }
            let prepared = Prepared {
                invocation: Invocation {
                    key: 0,
                    client,
                    op: Op::GetRecoveryFlow {
                        flow: FlowArg::Issued(*flow_key),
                    },
                },
                client_address: address.clone(),
                request: Request::Get(artifacts.id.clone()),
            };
            self.sequential(&prepared, "probe").await?;
        }
        Ok(())
    }

    /// One call alone, checked against every world.
    async fn sequential(&mut self, prepared: &Prepared, label: &str) -> Result<(), String> {
        let (observed, _) = self.send(prepared).await;
        let before = self.worlds.clone();
        let settings = self.settings;
        let mut predictions = Vec::new();
        self.worlds.retain_mut(|world| {
            let predicted = world.apply(settings, &prepared.invocation);
            let fits = predicted == observed.answer;
            predictions.push(predicted);
            fits
        });
        if self.worlds.is_empty() {
            let _ = before;
            return Err(format!(
                "{}{label} {:?}\n  server: {:?}\n  model:  {:?}",
                self.log, prepared.invocation.op, observed.answer, predictions
            ));
        }
        Ok(())
    }

    /// At the end: which tokens still work, which password logs in, which events exist.
    pub async fn finish(&mut self) -> Result<(), String> {
        let _ = writeln!(self.log, "end: flows, tokens, passwords and events");
        let (client, address) = fresh_address();
        for (flow_key, artifacts) in self.flows.clone() {
            let prepared = Prepared {
                invocation: Invocation {
                    key: 0,
                    client,
                    op: Op::GetRecoveryFlow {
                        flow: FlowArg::Issued(flow_key),
                    },
                },
                client_address: address.clone(),
                request: Request::Get(artifacts.id),
            };
            self.sequential(&prepared, "flow probe").await?;
        }
        for (key, token) in self.tokens.clone() {
            let prepared = Prepared {
                invocation: Invocation {
                    key: 0,
                    client,
                    op: Op::ResetPassword {
                        token: SecretArg::Issued(key),
                        password: PasswordArg::Strong(0),
                        confirmation_matches: false,
                    },
                },
                client_address: address.clone(),
                request: Request::Reset(token, STRONG[0].into(), "Not-The-Same-Password-1!".into()),
            };
            self.sequential(&prepared, "token probe").await?;
        }
        for slot in 0..SLOTS {
            let Some(current) = self.worlds[0].password_of(slot) else {
                continue;
            };
            let mut candidates = vec![current];
            candidates.extend((0..PASSWORDS).find(|p| *p != current));
            for password in candidates {
                let (login, text) = self.resolve_login(LoginRef {
                    slot,
                    spelling: Spelling::AsRegistered,
                });
                let prepared = Prepared {
                    invocation: Invocation {
                        key: 0,
                        client,
                        op: Op::VerifyPassword {
                            login,
                            password: PasswordArg::Strong(password),
                        },
                    },
                    client_address: address.clone(),
                    request: Request::VerifyPassword(text, STRONG[usize::from(password)].into()),
                };
                self.sequential(&prepared, "password probe").await?;
            }
        }
        let events = self.events().await;
        if !self.worlds.iter().any(|w| {
            (0..SLOTS).all(|slot| {
                w.events.get(&slot).map(Vec::as_slice).unwrap_or_default()
                    == events.get(&slot).map(Vec::as_slice).unwrap_or_default()
            })
        }) {
            return Err(format!(
                "{}events in the outbox: {events:?}\nevents the model expects: {:?}",
                self.log, self.worlds[0].events
            ));
        }
        Ok(())
    }

    async fn events(&self) -> BTreeMap<u8, Vec<&'static str>> {
        use recovery_service::db::entities::outbox;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
        let mut out = BTreeMap::new();
        for (slot, (id, _)) in &self.accounts {
            let rows = outbox::Entity::find()
                .filter(outbox::Column::AggregateId.eq(id.as_str()))
                .order_by_asc(outbox::Column::Id)
                .all(self.app.database.connection())
                .await
                .unwrap_or_default();
            let kinds: Vec<&'static str> = rows
                .into_iter()
                .filter_map(|row| match row.event_type.as_str() {
                    "password.changed" => Some("password.changed"),
                    "recovery.reported" => Some("recovery.reported"),
                    _ => None,
                })
                .collect();
            if !kinds.is_empty() {
                out.insert(*slot, kinds);
            }
        }
        out
    }

    fn explain(
        &self,
        invocations: &[&Invocation],
        results: &[(Observed, Option<String>)],
    ) -> String {
        let mut out = self.log.clone();
        let _ = writeln!(
            out,
            "no order of this step's calls, from any of {} world(s), gives the server's answers.",
            self.worlds.len()
        );
        for (inv, (observed, _)) in invocations.iter().zip(results) {
            let _ = writeln!(out, "  {:?}\n    server: {:?}", inv.op, observed.answer);
        }
        for order in orders(invocations.len()) {
            let mut world = self.worlds[0].clone();
            let predicted: Vec<String> = order
                .iter()
                .map(|&i| format!("#{i}: {:?}", world.apply(self.settings, invocations[i])))
                .collect();
            let _ = writeln!(out, "  model, in order {order:?}: {}", predicted.join("; "));
        }
        out
    }
}
