//! The reference model of the recovery contract: plain data and plain functions, no I/O, no
//! code of the service. For each call it says what the answer must be (OK and the shape of its
//! fields, or the exact reason) and how the state moves on: accounts and their passwords, flows,
//! codes and tokens, captchas, budgets and windows, report codes and freezes, and the mails and
//! events that must exist.
//!
//! Everything a call makes (a flow, a code, a token, a captcha, a report code) is named by the
//! key of the call that made it, so the model and the harness agree on identities without the
//! model ever seeing a secret.
//!
//! Two clocks: the service's (moved by the test) and the store's. Flows, codes, tokens,
//! captchas and cooldowns live by the service's clock; rate-limit windows, freezes and report
//! codes by the short-lived store's own TTLs. The in-process store follows the service's clock;
//! Redis keeps its own time, which no jump of the test's clock moves (`StoreClock::Own`).

use std::collections::{BTreeMap, BTreeSet};

use super::script::ChannelRef;

/// Milliseconds since the case began.
pub type Millis = i64;
/// The call that made something.
pub type Key = u32;

const SECOND: Millis = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreClock {
    /// The store's TTLs follow the service's clock (the in-process store on the test clock).
    Service,
    /// The store keeps its own time, which stands still for the few seconds a case lasts.
    Own,
}

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub limit: u32,
    pub window: Millis,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub flow_ttl: Millis,
    pub code_ttl: Millis,
    pub token_ttl: Millis,
    pub captcha_ttl: Millis,
    pub max_attempts: u32,
    pub resend_cooldown: Millis,
    pub max_sends: u32,
    pub report_freeze: Millis,
    pub report_code_ttl: Millis,
    /// Passwords a reset may not repeat: the current one and this many before it.
    pub history_depth: usize,
    pub per_login: Window,
    pub per_ip: Window,
    pub verify_password_per_login: Window,
    pub verify_code_per_account: Window,
    pub send_code_per_account: Window,
    pub store_clock: StoreClock,
}

// ---- what the harness hands the model -------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginArg {
    pub slot: u8,
    /// `false`: not an e-mail address (refused by the parser).
    pub valid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowArg {
    Issued(Key),
    Unknown,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeArg {
    Issued(Key),
    Wrong,
    WrongLength,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretArg {
    Issued(Key),
    Forged,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptchaArg {
    /// Made by the same call just before, answered right or wrong.
    Fresh {
        right: bool,
    },
    Made(Key),
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordArg {
    Strong(u8),
    Weak,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateCaptcha,
    StartRecovery {
        login: LoginArg,
        captcha: CaptchaArg,
    },
    GetRecoveryFlow {
        flow: FlowArg,
    },
    SendVerificationCode {
        flow: FlowArg,
        channel: ChannelRef,
    },
    VerifyCode {
        flow: FlowArg,
        code: CodeArg,
    },
    ResetPassword {
        token: SecretArg,
        password: PasswordArg,
        confirmation_matches: bool,
    },
    CancelRecovery {
        flow: FlowArg,
    },
    ReportUnrequestedRecovery {
        report: SecretArg,
    },
    AdminStartRecovery {
        login: LoginArg,
        return_code: bool,
    },
    VerifyPassword {
        login: LoginArg,
        password: PasswordArg,
    },
    CreateAccount {
        login: LoginArg,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub key: Key,
    /// The client's address, as the per-IP limit counts it.
    pub client: u32,
    pub op: Op,
}

// ---- what the model predicts ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    ChooseMethod,
    CodeSent,
    Verified,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub stage: Stage,
    pub attempts_left: u32,
    pub expires_at: Millis,
    pub resend_available_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    None,
    AttemptsLeft(u32),
    State(&'static str),
    Scope(&'static str),
    RetryAfterSeconds(u64),
    /// The fields named by `BadRequest`, in order.
    Fields(Vec<&'static str>),
    /// A policy refusal: whether it is the history rule.
    Reused(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Captcha,
    Flow(View),
    Verified {
        token_expires_at: Millis,
    },
    Reset {
        changed_at: Millis,
    },
    Done,
    Admin {
        flow: View,
        code_returned: bool,
    },
    Login {
        account: Option<u8>,
    },
    AccountCreated,
    Refused {
        reason: &'static str,
        detail: Detail,
    },
}

fn refused(reason: &'static str, detail: Detail) -> Answer {
    Answer::Refused { reason, detail }
}

fn invalid(fields: &[&'static str]) -> Answer {
    refused("INVALID_ARGUMENT", Detail::Fields(fields.to_vec()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MailKind {
    /// A code mail for the call `key`, sent from `client`'s address.
    Code {
        key: Key,
        client: u32,
    },
    PasswordChanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mail {
    pub slot: u8,
    pub kind: MailKind,
}

// ---- the state --------------------------------------------------------------------------------

/// Whose budgets a flow spends: its account, or (unknown logins and decoys) its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Account(u8),
    Login(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Every password it had, the current one last.
    pub passwords: Vec<u8>,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowState {
    ChooseMethod,
    /// `long`: issued once the owner's guess budget was spent (weighed by the flow's attempts
    /// only).
    CodeSent {
        code: Key,
        expires_at: Millis,
        long: bool,
    },
    Locked,
    Verified {
        token: Key,
        expires_at: Millis,
    },
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub slot: u8,
    /// `None`: a login nobody registered, or a decoy for a frozen account.
    pub account: Option<u8>,
    pub password_version: u32,
    pub expires_at: Millis,
    pub failed: u32,
    pub sends: u32,
    pub resend_available_at: Option<Millis>,
    pub state: FlowState,
    /// Opened by `AdminStartRecovery`: the anonymous per-account budgets do not weigh it.
    pub helpdesk: bool,
}

impl Flow {
    fn owner(&self) -> Owner {
        self.account.map_or(Owner::Login(self.slot), Owner::Account)
    }

    /// Whether the owner's guess budget weighs this flow's codes.
    fn guesses_count(&self) -> bool {
        !self.helpdesk && !matches!(self.state, FlowState::CodeSent { long: true, .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Captcha {
    expires_at: Millis,
    used: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Counter {
    count: u32,
    until: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    owner: Owner,
    /// The account's password version when the code was mailed: a reset or a report since
    /// revokes it.
    version: u32,
    until: Millis,
    used: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Budget {
    Ip(u32),
    Login(u8),
    VerifyPassword(u8),
    Codes(Owner),
    Sends(Owner),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub now: Millis,
    /// The store's time (equal to `now` when the store follows the service's clock).
    pub store_now: Millis,
    pub accounts: BTreeMap<u8, Account>,
    /// Flows the store holds (a cancelled or ended flow is gone).
    pub flows: BTreeMap<Key, Flow>,
    owner_flows: BTreeMap<Owner, BTreeSet<Key>>,
    captchas: BTreeMap<Key, Captcha>,
    counters: BTreeMap<Budget, Counter>,
    /// The flow whose code is its owner's live one.
    live_code: BTreeMap<Owner, Key>,
    reports: BTreeMap<Key, Report>,
    frozen_until: BTreeMap<Owner, Millis>,
    /// Mails due since the last check.
    pub mails: Vec<Mail>,
    /// Events each account's outbox must hold, oldest first.
    pub events: BTreeMap<u8, Vec<&'static str>>,
}

impl World {
    /// The accounts of the known slots exist, each with password 0.
    pub fn new(known: u8) -> Self {
        Self {
            now: 0,
            store_now: 0,
            accounts: (0..known)
                .map(|slot| {
                    (
                        slot,
                        Account {
                            passwords: vec![0],
                            version: 0,
                        },
                    )
                })
                .collect(),
            flows: BTreeMap::new(),
            owner_flows: BTreeMap::new(),
            captchas: BTreeMap::new(),
            counters: BTreeMap::new(),
            live_code: BTreeMap::new(),
            reports: BTreeMap::new(),
            frozen_until: BTreeMap::new(),
            mails: Vec::new(),
            events: BTreeMap::new(),
        }
    }

    pub fn advance(&mut self, settings: &Settings, seconds: u64) {
        let by = i64::try_from(seconds).unwrap_or(i64::MAX / 2) * SECOND;
        self.now += by;
        if settings.store_clock == StoreClock::Service {
            self.store_now += by;
        }
    }

    pub fn view(&self, settings: &Settings, flow: &Flow) -> View {
        View {
            stage: match flow.state {
                FlowState::ChooseMethod => Stage::ChooseMethod,
                FlowState::CodeSent { .. } | FlowState::Locked => Stage::CodeSent,
                FlowState::Verified { .. } => Stage::Verified,
                FlowState::Completed => Stage::Completed,
            },
            attempts_left: settings.max_attempts.saturating_sub(flow.failed),
            expires_at: flow.expires_at,
            resend_available_at: flow.resend_available_at,
        }
    }

    /// Counts one hit; `Err(retry_after)` once more than the limit fell in the window.
    fn hit(&mut self, budget: Budget, rule: Window) -> Result<(), Millis> {
        let now = self.store_now;
        let counter = self.counters.entry(budget).or_insert(Counter {
            count: 0,
            until: now + rule.window,
        });
        if now >= counter.until {
            *counter = Counter {
                count: 0,
                until: now + rule.window,
            };
        }
        counter.count += 1;
        if counter.count > rule.limit {
            Err(counter.until - now)
        } else {
            Ok(())
        }
    }

    /// Whether the budget is spent (the next hit is refused), without counting one.
    fn spent(&self, budget: &Budget, rule: Window) -> bool {
        self.counters
            .get(budget)
            .is_some_and(|c| self.store_now < c.until && c.count >= rule.limit)
    }

    fn limit_ip(&mut self, settings: &Settings, client: u32) -> Result<(), Answer> {
        self.hit(Budget::Ip(client), settings.per_ip)
            .map_err(|_| refused("RATE_LIMITED", Detail::Scope("client_ip")))
    }

    fn frozen(&self, owner: Owner) -> bool {
        self.frozen_until
            .get(&owner)
            .is_some_and(|until| self.store_now < *until)
    }

    fn live_flow(&self, key: Key) -> Option<&Flow> {
        self.flows.get(&key).filter(|f| self.now < f.expires_at)
    }

    fn open_flow(
        &mut self,
        settings: &Settings,
        key: Key,
        slot: u8,
        account: Option<u8>,
        helpdesk: bool,
        read: Option<&World>,
    ) {
        // The version the flow is bound to is read before the flow is stored: a reset or a
        // report of the same step may bump it in between, and the flow's token is then stale.
        let password_version = account
            .and_then(|a| read.unwrap_or(self).accounts.get(&a))
            .map_or(0, |a| a.version);
        let flow = Flow {
            slot,
            account,
            password_version,
            expires_at: self.now + settings.flow_ttl,
            failed: 0,
            sends: 0,
            resend_available_at: Some(self.now),
            state: FlowState::ChooseMethod,
            helpdesk,
        };
        self.owner_flows
            .entry(flow.owner())
            .or_default()
            .insert(key);
        self.flows.insert(key, flow);
    }

    fn end_flows_of(&mut self, owner: Owner, keep: Option<Key>) {
        for key in self.owner_flows.get(&owner).cloned().unwrap_or_default() {
            if Some(key) != keep {
                self.flows.remove(&key);
            }
        }
    }

    /// A new code in `flow` (already checked to allow one): the send budget, the live-code
    /// pointer, the report code and the mail.
    fn issue_code(
        &mut self,
        settings: &Settings,
        flow_key: Key,
        inv: &Invocation,
        delivery: Delivery,
    ) -> Result<(), Answer> {
        let Some(flow) = self.flows.get(&flow_key).cloned() else {
            return Err(refused("FLOW_NOT_FOUND", Detail::None));
        };
        let owner = flow.owner();
        // Read before the send is counted, as the service does.
        let long = delivery == Delivery::Mail
            && !flow.helpdesk
            && self.spent(&Budget::Codes(owner), settings.verify_code_per_account);
        // The helpdesk neither spends nor meets the anonymous mail budget.
        if delivery == Delivery::Mail {
            self.hit(Budget::Sends(owner), settings.send_code_per_account)
                .map_err(|_| refused("RATE_LIMITED", Detail::Scope("account")))?;
        }
        let sends = flow.sends + 1;
        let next = Flow {
            sends,
            resend_available_at: (sends < settings.max_sends)
                .then_some(self.now + settings.resend_cooldown),
            state: FlowState::CodeSent {
                code: inv.key,
                expires_at: (self.now + settings.code_ttl).min(flow.expires_at),
                long,
            },
            ..flow.clone()
        };
        self.flows.insert(flow_key, next);
        self.live_code.insert(owner, flow_key);
        if delivery == Delivery::ReturnToCaller {
            return Ok(());
        }
        let delivered = match delivery {
            Delivery::Mail => flow.account.is_some() && !self.frozen(owner),
            Delivery::HelpdeskMail => true,
            Delivery::ReturnToCaller => false,
        };
        // A report code goes with every delivered code mail; decoys (nobody receives them)
        // store none.
        if delivered && let Some(slot) = flow.account {
            let version = self.accounts.get(&slot).map_or(0, |a| a.version);
            self.reports.insert(
                inv.key,
                Report {
                    owner,
                    version,
                    until: self.store_now + settings.report_code_ttl,
                    used: false,
                },
            );
        }
        if delivered {
            self.mails.push(Mail {
                slot: flow.slot,
                kind: MailKind::Code {
                    key: inv.key,
                    client: inv.client,
                },
            });
        }
        Ok(())
    }

    /// Applies one call; returns the answer the service must give.
    pub fn apply(&mut self, settings: &Settings, inv: &Invocation) -> Answer {
        self.apply_reading(settings, inv, None)
    }

    /// Applies one call of a step whose calls ran at once, where the service may have read
    /// state before another call of the step changed it (`read`: the world as the step found
    /// it). `VerifyCode` weighs a guess against the account's budget on the flow it read, before
    /// the compare-and-set that settles the flow (so a burst of guesses can never outrun the
    /// budget): two right codes at once may spend two guesses, and the second one may be
    /// refused as over the budget. A start binds its flow to the password version it read: a
    /// reset or report of the same step may have bumped it since, leaving the flow's token
    /// stale (refused at the reset, never the other way round).
    pub fn apply_reading(
        &mut self,
        settings: &Settings,
        inv: &Invocation,
        read: Option<&World>,
    ) -> Answer {
        match self.try_apply(settings, inv, read) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_apply(
        &mut self,
        settings: &Settings,
        inv: &Invocation,
        read: Option<&World>,
    ) -> Result<Answer, Answer> {
        let now = self.now;
        match &inv.op {
            Op::CreateCaptcha => {
                self.limit_ip(settings, inv.client)?;
                self.make_captcha(settings, inv.key);
                Ok(Answer::Captcha)
            }
            Op::StartRecovery { login, captcha } => {
                if let CaptchaArg::Fresh { .. } = captcha {
                    self.limit_ip(settings, inv.client)?;
                    self.make_captcha(settings, inv.key);
                }
                if !login.valid {
                    return Err(invalid(&["login_id"]));
                }
                self.limit_ip(settings, inv.client)?;
                let (captcha_key, right) = match captcha {
                    CaptchaArg::Fresh { right } => (inv.key, *right),
                    CaptchaArg::Made(key) => (*key, true),
                    CaptchaArg::Missing => {
                        return Err(invalid(&["captcha_id", "captcha_answer", "pow_solution"]));
                    }
                };
                // The first answer burns a captcha, right or wrong.
                let accepted = match self.captchas.get_mut(&captcha_key) {
                    Some(c) => {
                        let ok = !c.used && now < c.expires_at && right;
                        c.used = true;
                        ok
                    }
                    None => false,
                };
                if !accepted {
                    return Err(refused("CAPTCHA_INVALID", Detail::None));
                }
                self.hit(Budget::Login(login.slot), settings.per_login)
                    .map_err(|_| refused("RATE_LIMITED", Detail::Scope("login")))?;
                let account = self
                    .accounts
                    .contains_key(&login.slot)
                    .then_some(login.slot)
                    .filter(|slot| !self.frozen(Owner::Account(*slot)));
                self.open_flow(settings, inv.key, login.slot, account, false, read);
                let flow = &self.flows[&inv.key];
                Ok(Answer::Flow(self.view(settings, flow)))
            }
            Op::GetRecoveryFlow { flow } => {
                let key = self.flow_key(flow)?;
                self.limit_ip(settings, inv.client)?;
                let flow = key
                    .and_then(|k| self.live_flow(k))
                    .ok_or_else(|| refused("FLOW_NOT_FOUND", Detail::None))?;
                Ok(Answer::Flow(self.view(settings, flow)))
            }
            Op::SendVerificationCode { flow, channel } => {
                let key = self.flow_key(flow)?;
                self.limit_ip(settings, inv.client)?;
                let (key, current) = key
                    .and_then(|k| self.live_flow(k).map(|f| (k, f.clone())))
                    .ok_or_else(|| refused("FLOW_NOT_FOUND", Detail::None))?;
                if *channel == ChannelRef::Sms {
                    return Err(invalid(&["channel"]));
                }
                match current.state {
                    FlowState::ChooseMethod | FlowState::CodeSent { .. } => {}
                    FlowState::Locked => return Err(refused("ATTEMPTS_EXHAUSTED", Detail::None)),
                    FlowState::Verified { .. } => {
                        return Err(refused("FLOW_STATE", Detail::State("VERIFIED")));
                    }
                    FlowState::Completed => {
                        return Err(refused("FLOW_STATE", Detail::State("COMPLETED")));
                    }
                }
                if current.sends >= settings.max_sends {
                    return Err(refused("RATE_LIMITED", Detail::Scope("flow")));
                }
                if let Some(at) = current.resend_available_at
                    && now < at
                {
                    let seconds = ((at - now) / SECOND).max(1);
                    return Err(refused(
                        "RESEND_TOO_SOON",
                        Detail::RetryAfterSeconds(seconds.unsigned_abs()),
                    ));
                }
                self.issue_code(settings, key, inv, Delivery::Mail)?;
                Ok(Answer::Flow(self.view(settings, &self.flows[&key])))
            }
            Op::VerifyCode { flow, code } => {
                let key = match (flow, code) {
                    (FlowArg::Malformed, CodeArg::Malformed) => {
                        return Err(invalid(&["flow_id", "code"]));
                    }
                    (_, CodeArg::Malformed) => return Err(invalid(&["code"])),
                    _ => self.flow_key(flow)?,
                };
                self.limit_ip(settings, inv.client)?;
                if *code == CodeArg::WrongLength {
                    return Err(invalid(&["code"]));
                }
                let (key, current) = key
                    .and_then(|k| self.flows.get(&k).map(|f| (k, f.clone())))
                    .ok_or_else(|| refused("FLOW_NOT_FOUND", Detail::None))?;
                let alive = now < current.expires_at;
                let weighed = read.and_then(|w| w.flows.get(&key)).unwrap_or(&current);
                let would_weigh = now < weighed.expires_at
                    && weighed.failed < settings.max_attempts
                    && matches!(weighed.state, FlowState::CodeSent { expires_at, .. } if now < expires_at);
                let owner = current.owner();
                if would_weigh && current.guesses_count() {
                    self.hit(Budget::Codes(owner), settings.verify_code_per_account)
                        .map_err(|_| refused("RATE_LIMITED", Detail::Scope("account")))?;
                }
                if !alive {
                    return Err(refused("FLOW_NOT_FOUND", Detail::None));
                }
                let (current_code, code_expires_at) = match current.state {
                    FlowState::CodeSent {
                        code, expires_at, ..
                    } => (code, expires_at),
                    FlowState::Locked => return Err(refused("ATTEMPTS_EXHAUSTED", Detail::None)),
                    FlowState::ChooseMethod => {
                        return Err(refused("FLOW_STATE", Detail::State("CHOOSE_METHOD")));
                    }
                    FlowState::Verified { .. } => {
                        return Err(refused("FLOW_STATE", Detail::State("VERIFIED")));
                    }
                    FlowState::Completed => {
                        return Err(refused("FLOW_STATE", Detail::State("COMPLETED")));
                    }
                };
                if now >= code_expires_at {
                    return Err(refused("CODE_EXPIRED", Detail::None));
                }
                let live = self.live_code.get(&owner).is_none_or(|k| *k == key);
                let matches =
                    live && current.account.is_some() && *code == CodeArg::Issued(current_code);
                if matches {
                    let expires_at = (now + settings.token_ttl).min(current.expires_at);
                    let next = Flow {
                        state: FlowState::Verified {
                            token: inv.key,
                            expires_at,
                        },
                        resend_available_at: None,
                        ..current
                    };
                    self.flows.insert(key, next);
                    return Ok(Answer::Verified {
                        token_expires_at: expires_at,
                    });
                }
                let failed = current.failed + 1;
                let left = settings.max_attempts.saturating_sub(failed);
                let mut next = Flow { failed, ..current };
                if left == 0 {
                    next.state = FlowState::Locked;
                    next.resend_available_at = None;
                }
                self.flows.insert(key, next);
                Err(refused("CODE_INVALID", Detail::AttemptsLeft(left)))
            }
            Op::ResetPassword {
                token,
                password,
                confirmation_matches,
            } => {
                let token = match token {
                    SecretArg::Malformed => return Err(invalid(&["reset_token"])),
                    SecretArg::Forged => None,
                    SecretArg::Issued(key) => Some(*key),
                };
                self.limit_ip(settings, inv.client)?;
                let token_invalid = || refused("TOKEN_INVALID", Detail::None);
                let (flow_key, flow) = token
                    .and_then(|token| {
                        self.flows.iter().find(|(_, f)| {
                            now < f.expires_at
                                && matches!(f.state, FlowState::Verified { token: t, expires_at } if t == token && now < expires_at)
                        })
                    })
                    .map(|(k, f)| (*k, f.clone()))
                    .ok_or_else(token_invalid)?;
                let slot = flow.account.ok_or_else(token_invalid)?;
                let account = self
                    .accounts
                    .get(&slot)
                    .cloned()
                    .ok_or_else(token_invalid)?;
                if !confirmation_matches {
                    return Err(refused("PASSWORD_MISMATCH", Detail::None));
                }
                let PasswordArg::Strong(new) = *password else {
                    return Err(refused("PASSWORD_POLICY", Detail::Reused(false)));
                };
                let recent = account
                    .passwords
                    .iter()
                    .rev()
                    .take(settings.history_depth + 1);
                if recent.clone().any(|p| *p == new) {
                    return Err(refused("PASSWORD_POLICY", Detail::Reused(true)));
                }
                if flow.password_version != account.version {
                    // Another flow changed the password since this one started.
                    self.flows.remove(&flow_key);
                    return Err(token_invalid());
                }
                let account = self.accounts.entry(slot).or_insert(account);
                account.passwords.push(new);
                account.version += 1;
                self.flows.insert(
                    flow_key,
                    Flow {
                        state: FlowState::Completed,
                        resend_available_at: None,
                        ..flow
                    },
                );
                self.end_flows_of(Owner::Account(slot), Some(flow_key));
                self.mails.push(Mail {
                    slot,
                    kind: MailKind::PasswordChanged,
                });
                self.events
                    .entry(slot)
                    .or_default()
                    .push("password.changed");
                Ok(Answer::Reset { changed_at: now })
            }
            Op::CancelRecovery { flow } => {
                let key = self.flow_key(flow)?;
                self.limit_ip(settings, inv.client)?;
                let key = key
                    .filter(|k| self.live_flow(*k).is_some())
                    .ok_or_else(|| refused("FLOW_NOT_FOUND", Detail::None))?;
                self.flows.remove(&key);
                Ok(Answer::Done)
            }
            Op::ReportUnrequestedRecovery { report } => {
                let report = match report {
                    SecretArg::Malformed => return Err(invalid(&["report_code"])),
                    SecretArg::Forged => None,
                    SecretArg::Issued(key) => Some(*key),
                };
                self.limit_ip(settings, inv.client)?;
                let store_now = self.store_now;
                let (owner, version) = report
                    .and_then(|key| self.reports.get_mut(&key))
                    .filter(|r| !r.used && store_now < r.until)
                    .map(|r| {
                        r.used = true;
                        (r.owner, r.version)
                    })
                    .ok_or_else(|| refused("TOKEN_INVALID", Detail::None))?;
                // A reset or another report since the mail revoked the code.
                if let Owner::Account(slot) = owner
                    && self
                        .accounts
                        .get(&slot)
                        .is_some_and(|a| a.version != version)
                {
                    return Err(refused("TOKEN_INVALID", Detail::None));
                }
                self.frozen_until
                    .insert(owner, store_now + settings.report_freeze);
                self.end_flows_of(owner, None);
                if let Owner::Account(slot) = owner
                    && let Some(account) = self.accounts.get_mut(&slot)
                {
                    // The report bumps the password version: no flow started before it resets.
                    account.version += 1;
                    self.events
                        .entry(slot)
                        .or_default()
                        .push("recovery.reported");
                }
                Ok(Answer::Done)
            }
            Op::AdminStartRecovery { login, return_code } => {
                if !login.valid {
                    return Err(invalid(&["login_id"]));
                }
                // `helpdesk_per_caller` is not modelled: the harness's one caller (loopback)
                // serves every case of a run, so the server runs with a budget no run reaches.
                if !self.accounts.contains_key(&login.slot) {
                    return Err(refused("ACCOUNT_NOT_FOUND", Detail::None));
                }
                self.open_flow(settings, inv.key, login.slot, Some(login.slot), true, read);
                let delivery = if *return_code {
                    Delivery::ReturnToCaller
                } else {
                    Delivery::HelpdeskMail
                };
                self.issue_code(settings, inv.key, inv, delivery)?;
                Ok(Answer::Admin {
                    flow: self.view(settings, &self.flows[&inv.key]),
                    code_returned: *return_code,
                })
            }
            Op::VerifyPassword { login, password } => {
                if !login.valid {
                    return Err(invalid(&["login_id"]));
                }
                self.hit(
                    Budget::VerifyPassword(login.slot),
                    settings.verify_password_per_login,
                )
                .map_err(|_| refused("RATE_LIMITED", Detail::Scope("login")))?;
                let valid = self.accounts.get(&login.slot).is_some_and(|account| {
                    *password == PasswordArg::Strong(account.passwords.last().copied().unwrap_or(0))
                });
                Ok(Answer::Login {
                    account: valid.then_some(login.slot),
                })
            }
            Op::CreateAccount { login } => {
                if !login.valid {
                    return Err(invalid(&["login_id"]));
                }
                if self.accounts.contains_key(&login.slot) {
                    return Err(refused("ACCOUNT_EXISTS", Detail::None));
                }
                self.accounts.insert(
                    login.slot,
                    Account {
                        passwords: vec![0],
                        version: 0,
                    },
                );
                Ok(Answer::AccountCreated)
            }
        }
    }

    fn make_captcha(&mut self, settings: &Settings, key: Key) {
        self.captchas.insert(
            key,
            Captcha {
                expires_at: self.now + settings.captcha_ttl,
                used: false,
            },
        );
    }

    /// The flow an argument names; a malformed id is refused before anything is counted.
    fn flow_key(&self, flow: &FlowArg) -> Result<Option<Key>, Answer> {
        match flow {
            FlowArg::Malformed => Err(invalid(&["flow_id"])),
            FlowArg::Unknown => Ok(None),
            FlowArg::Issued(key) => Ok(Some(*key)),
        }
    }

    /// The current password of an account in a slot, if it exists.
    pub fn password_of(&self, slot: u8) -> Option<u8> {
        self.accounts
            .get(&slot)
            .and_then(|a| a.passwords.last().copied())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Mail,
    HelpdeskMail,
    ReturnToCaller,
}

/// Every order of `calls` (a step's concurrent calls), for the linearizability check.
pub fn orders(n: usize) -> Vec<Vec<usize>> {
    fn permute(prefix: &mut Vec<usize>, left: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left.is_empty() {
            out.push(prefix.clone());
            return;
        }
        for i in 0..left.len() {
            let item = left.remove(i);
            prefix.push(item);
            permute(prefix, left, out);
            prefix.pop();
            left.insert(i, item);
        }
    }
    let mut out = Vec::new();
    permute(&mut Vec::new(), &mut (0..n).collect(), &mut out);
    out
}
