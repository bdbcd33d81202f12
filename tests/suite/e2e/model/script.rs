//! What a case is made of: steps of calls by a few clients, with every argument a *reference*
//! (the latest flow, the code mailed before the latest, a token replayed, ...) that the harness
//! resolves against what the server handed out so far. References keep every shrunk sequence
//! meaningful: removing a step never leaves a dangling argument, it only changes what it
//! points at.

use std::fmt;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Anonymous clients, each with an address of its own (`x-forwarded-for` through the trusted
/// loopback proxy). Any client may call any RPC; calls of different clients in one step run at
/// once.
pub const CLIENTS: u8 = 3;
/// Login slots: the first `KNOWN` have accounts from the start, the others are logins nobody
/// registered (until a `CreateAccount` step registers one).
pub const SLOTS: u8 = 4;
pub const KNOWN: u8 = 2;
/// Strong passwords a step may choose (the first is every account's initial password).
pub const PASSWORDS: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Calls by distinct clients, all sent at once.
    Calls(Vec<(u8, Call)>),
    /// The manual clock moves forward this many seconds.
    Advance(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spelling {
    /// As the account was registered.
    AsRegistered,
    Lower,
    Upper,
    /// Surrounded by spaces, a tab and a no-break space.
    Padded,
    /// "ß" where the login has "ss" (full case folding makes them one login).
    Eszett,
    /// The local part in full-width letters (NFKC makes them plain).
    FullWidth,
    /// Decomposed (NFD): "é" as "e" + a combining acute accent.
    Decomposed,
    /// Not an e-mail address at all.
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRef {
    pub slot: u8,
    pub spelling: Spelling,
}

/// A flow: the n-th most recent one the server handed out (0 = the latest), an id it never
/// issued, or something that is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowRef {
    Recent(u8),
    Unknown,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeRef {
    /// The newest code delivered for the flow (to the mailbox or to the helpdesk).
    Latest,
    /// The same, typed as "123 456" (a long code: in lower case, without its hyphens).
    LatestSpaced,
    /// The code delivered before the newest (a resend made it stale).
    Previous,
    /// The newest code of another flow of the same login.
    OtherFlow,
    /// Six digits that are none of the flow's codes.
    Wrong,
    /// A well-formed long code (20 Crockford characters) that is none of the flow's codes.
    WrongLong,
    /// Seven digits: well-formed for the parser, the wrong length for this deployment.
    WrongLength,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRef {
    /// The n-th most recent reset token handed out (0 = the latest).
    Recent(u8),
    /// Well-formed, never issued.
    Forged,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportRef {
    /// The report code of the n-th most recent code mail (0 = the latest).
    Recent(u8),
    Forged,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptchaRef {
    /// A captcha made just before, answered right.
    Fresh,
    /// A captcha made just before, answered wrong.
    FreshWrong,
    /// The n-th most recent captcha made so far (answered right; it may be used or expired).
    Recent(u8),
    /// No captcha fields at all.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PasswordRef {
    /// One of the strong passwords (0 is every account's first).
    Strong(u8),
    /// One the policy refuses.
    Weak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelRef {
    Unspecified,
    Email,
    Sms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    CreateCaptcha,
    StartRecovery {
        login: LoginRef,
        captcha: CaptchaRef,
    },
    GetRecoveryFlow {
        flow: FlowRef,
    },
    SendVerificationCode {
        flow: FlowRef,
        channel: ChannelRef,
    },
    VerifyCode {
        flow: FlowRef,
        code: CodeRef,
    },
    ResetPassword {
        token: TokenRef,
        password: PasswordRef,
        confirmation_matches: bool,
    },
    CancelRecovery {
        flow: FlowRef,
    },
    ReportUnrequestedRecovery {
        report: ReportRef,
    },
    AdminStartRecovery {
        login: LoginRef,
        return_code: bool,
    },
    VerifyPassword {
        login: LoginRef,
        password: PasswordRef,
    },
    CreateAccount {
        login: LoginRef,
    },
}

// ---- readable form ------------------------------------------------------------------------

fn client_name(client: u8) -> char {
    char::from(b'a' + client)
}

impl fmt::Display for LoginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.slot < KNOWN {
            format!("account{}", self.slot)
        } else {
            format!("stranger{}", self.slot)
        };
        write!(f, "{who} {:?}", self.spelling)
    }
}

impl fmt::Display for FlowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recent(0) => f.write_str("latest flow"),
            Self::Recent(n) => write!(f, "flow {n} back"),
            Self::Unknown => f.write_str("unknown flow"),
            Self::Malformed => f.write_str("malformed flow id"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateCaptcha => f.write_str("CreateCaptcha"),
            Self::StartRecovery { login, captcha } => {
                write!(f, "StartRecovery({login}, captcha {captcha:?})")
            }
            Self::GetRecoveryFlow { flow } => write!(f, "GetRecoveryFlow({flow})"),
            Self::SendVerificationCode { flow, channel } => {
                write!(f, "SendVerificationCode({flow}, {channel:?})")
            }
            Self::VerifyCode { flow, code } => write!(f, "VerifyCode({flow}, code {code:?})"),
            Self::ResetPassword {
                token,
                password,
                confirmation_matches,
            } => write!(
                f,
                "ResetPassword(token {token:?}, {password:?}, confirmation {})",
                if *confirmation_matches {
                    "same"
                } else {
                    "different"
                }
            ),
            Self::CancelRecovery { flow } => write!(f, "CancelRecovery({flow})"),
            Self::ReportUnrequestedRecovery { report } => {
                write!(f, "ReportUnrequestedRecovery(report code {report:?})")
            }
            Self::AdminStartRecovery { login, return_code } => write!(
                f,
                "AdminStartRecovery({login}, {})",
                if *return_code {
                    "code returned"
                } else {
                    "code mailed"
                }
            ),
            Self::VerifyPassword { login, password } => {
                write!(f, "VerifyPassword({login}, {password:?})")
            }
            Self::CreateAccount { login } => write!(f, "CreateAccount({login}, Strong(0))"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Advance(seconds) => write!(f, "clock +{}", human_duration(*seconds)),
            Self::Calls(calls) => {
                let parts: Vec<String> = calls
                    .iter()
                    .map(|(client, call)| format!("{}: {call}", client_name(*client)))
                    .collect();
                f.write_str(&parts.join("  ||  "))
            }
        }
    }
}

pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// A case as a script: one step a line, readable, and the JSON the replay reads.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for (n, step) in steps.iter().enumerate() {
        out.push_str(&format!("# {n:>2}. {step}\n"));
        out.push_str(&serde_json::to_string(step).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Reads a saved script back (lines starting with `#` are the readable comments).
pub fn parse(text: &str) -> Result<Vec<Step>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
        .collect()
}

// ---- generation ---------------------------------------------------------------------------

/// Clock jumps that land just before and just after every lifetime and window of the
/// configuration the model runs (see `configure` in mod.rs), plus small ones.
pub const JUMPS: &[u64] = &[
    1, 29, 31, // reset lease
    59, 60, 61, // resend cooldown
    299, 301, // captcha, password-guess window
    599, 600, 601, // code, token, per-IP window
    1_799, 1_801, // flow
    3_599, 3_601, // per-login window
    86_399, 86_401,  // account budgets, report freeze
    604_801, // report code
];

fn spelling() -> impl Strategy<Value = Spelling> {
    prop_oneof![
        6 => Just(Spelling::AsRegistered),
        1 => Just(Spelling::Lower),
        1 => Just(Spelling::Upper),
        1 => Just(Spelling::Padded),
        1 => Just(Spelling::Eszett),
        1 => Just(Spelling::FullWidth),
        1 => Just(Spelling::Decomposed),
        1 => Just(Spelling::Malformed),
    ]
}

/// Mostly the case's focus login, so that one login's budgets and flows get deep.
fn login(focus: u8) -> impl Strategy<Value = LoginRef> {
    (
        prop_oneof![5 => Just(focus), 1 => 0..KNOWN, 1 => KNOWN..SLOTS],
        spelling(),
    )
        .prop_map(|(slot, spelling)| LoginRef { slot, spelling })
}

fn flow() -> impl Strategy<Value = FlowRef> {
    prop_oneof![
        10 => Just(FlowRef::Recent(0)),
        3 => Just(FlowRef::Recent(1)),
        2 => (2u8..5).prop_map(FlowRef::Recent),
        1 => Just(FlowRef::Unknown),
        1 => Just(FlowRef::Malformed),
    ]
}

fn code() -> impl Strategy<Value = CodeRef> {
    prop_oneof![
        8 => Just(CodeRef::Latest),
        1 => Just(CodeRef::LatestSpaced),
        2 => Just(CodeRef::Previous),
        1 => Just(CodeRef::OtherFlow),
        4 => Just(CodeRef::Wrong),
        1 => Just(CodeRef::WrongLong),
        1 => Just(CodeRef::WrongLength),
        1 => Just(CodeRef::Malformed),
    ]
}

fn password() -> impl Strategy<Value = PasswordRef> {
    prop_oneof![
        6 => (0..PASSWORDS).prop_map(PasswordRef::Strong),
        1 => Just(PasswordRef::Weak),
    ]
}

fn call(focus: u8) -> impl Strategy<Value = Call> {
    prop_oneof![
        1 => Just(Call::CreateCaptcha),
        4 => (
            login(focus),
            prop_oneof![
                8 => Just(CaptchaRef::Fresh),
                1 => Just(CaptchaRef::FreshWrong),
                1 => (0u8..3).prop_map(CaptchaRef::Recent),
                1 => Just(CaptchaRef::Missing),
            ]
        )
            .prop_map(|(login, captcha)| Call::StartRecovery { login, captcha }),
        1 => flow().prop_map(|flow| Call::GetRecoveryFlow { flow }),
        6 => (
            flow(),
            prop_oneof![
                4 => Just(ChannelRef::Email),
                2 => Just(ChannelRef::Unspecified),
                1 => Just(ChannelRef::Sms),
            ]
        )
            .prop_map(|(flow, channel)| Call::SendVerificationCode { flow, channel }),
        10 => (flow(), code()).prop_map(|(flow, code)| Call::VerifyCode { flow, code }),
        4 => (
            prop_oneof![
                8 => (0u8..3).prop_map(TokenRef::Recent),
                1 => Just(TokenRef::Forged),
                1 => Just(TokenRef::Malformed),
            ],
            password(),
            prop_oneof![6 => Just(true), 1 => Just(false)],
        )
            .prop_map(|(token, password, confirmation_matches)| Call::ResetPassword {
                token,
                password,
                confirmation_matches,
            }),
        1 => flow().prop_map(|flow| Call::CancelRecovery { flow }),
        1 => prop_oneof![
            6 => (0u8..3).prop_map(ReportRef::Recent),
            1 => Just(ReportRef::Forged),
            1 => Just(ReportRef::Malformed),
        ]
        .prop_map(|report| Call::ReportUnrequestedRecovery { report }),
        2 => (login(focus), any::<bool>())
            .prop_map(|(login, return_code)| Call::AdminStartRecovery { login, return_code }),
        1 => (login(focus), password()).prop_map(|(login, password)| Call::VerifyPassword { login, password }),
        1 => login(focus).prop_map(|login| Call::CreateAccount { login }),
    ]
}

fn jump() -> impl Strategy<Value = u64> {
    // Short jumps (cooldowns, leases) most often: long ones end every flow of the case.
    prop_oneof![
        6 => proptest::sample::select(&JUMPS[..6]),
        3 => proptest::sample::select(&JUMPS[6..11]),
        2 => proptest::sample::select(&JUMPS[11..]),
    ]
}

fn step(focus: u8) -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => proptest::collection::vec(call(focus), 1..=CLIENTS as usize).prop_map(|calls| {
            Step::Calls(calls.into_iter().zip(0..CLIENTS).map(|(call, client)| (client, call)).collect())
        }),
        // Mostly one client at a time, so that sequences get deep; the others race.
        12 => (0..CLIENTS, call(focus)).prop_map(|(client, call)| Step::Calls(vec![(client, call)])),
        2 => jump().prop_map(Step::Advance),
    ]
}

/// A case: its steps, most of them about one login (the focus).
pub fn case(steps: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<Step>> {
    (0..SLOTS).prop_flat_map(move |focus| proptest::collection::vec(step(focus), steps.clone()))
}
