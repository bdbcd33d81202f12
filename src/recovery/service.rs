//! The recovery use cases, one method per RPC. Each reads the clock once, loads what it needs,
//! asks a pure transition in `flow` what to do, and writes the result with one atomic store
//! operation (compare-and-swap on the flow's version, retried on conflict).

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::captcha::CaptchaRecord;
use super::commands::{
    CaptchaAnswer, FlowId, SendCode, StartRecovery, ValidatePassword, VerifyCode,
};
use super::error::{FieldViolation, PolicyViolation, RecoveryError};
use super::flow::{Channel, Flow, FlowStage, FlowState, Method};
use super::handle::{
    CODE_PURPOSE, CaptchaCheck, DEVICE_PURPOSE, LOGIN_PURPOSE, REPORT_PURPOSE, TOKEN_PURPOSE,
};
pub use super::handle::{CaptchaAnswerSource, Recovery, RecoverySettings, RequestContext};
use super::input::{DeviceToken, LoginId};
use super::input::{VerificationCode, group_long_code};
use super::limits::LimitScope;
use super::policy::PasswordPolicy;
use super::ports::{Account, MessageKind, Notice, Versioned};
use super::pow::{PowSolution, ProofOfWork};
use crate::blocking::BlockingError;
use crate::clock::after;
use crate::secrets::keys;
use crate::secrets::mask_email;

/// Where a new code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeDelivery {
    /// Mailed to the account's address (a decoy for unknown or frozen owners).
    Mail,
    /// Mailed by the helpdesk's request: a report freeze does not hold it back.
    HelpdeskMail,
    /// Handed back to the helpdesk caller (`AdminStartRecovery` with `return_code`); nothing
    /// is mailed.
    ReturnToCaller,
}

/// Who opened a flow, which decides the budgets its codes draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowOrigin {
    /// `StartRecovery`; `known_device` when it named a valid device token of the account.
    SelfService { known_device: bool },
    /// `AdminStartRecovery`: budgeted per caller, never by the anonymous per-account budgets.
    Helpdesk,
}

/// A new single-use report code for a code mail: 128 random bits as hex. Only its keyed hash is
/// stored, pointing at the account and its password version (a later reset or report revokes
/// it, `report::ReportedOwner`), for `report::REPORT_CODE_TTL`.
///
/// A decoy (an unknown login, a frozen account) gets a code too, so the work is the same, but
/// nothing durable is written for it: nobody receives the mail, and a week-long key per decoy
/// would let anyone fill the store. The same round trip is made as a read-and-delete of a key
/// that cannot exist.
async fn issue_report_code(
    recovery: &Recovery,
    account: Option<&super::ports::Account>,
) -> Result<SecretString, RecoveryError> {
    let code = hex::encode(keys::random_bytes::<16>().map_err(RecoveryError::internal)?);
    let mac = recovery.keys.sign(REPORT_PURPOSE, &[code.as_bytes()]);
    match account {
        Some(account) => {
            let owner = super::report::ReportedOwner::stored(&account.id, account.password_version);
            recovery
                .store
                .put_report_code(&mac, &owner, super::report::REPORT_CODE_TTL)
                .await?;
        }
        None => {
            recovery.store.take_report_code(&mac).await?;
        }
    }
    Ok(SecretString::from(code))
}

/// Compare-and-swap retries before giving up; 64 covers 50 concurrent writers on one flow.
const MAX_CAS_ATTEMPTS: usize = 64;

/// What a UI may know about a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub flow_id: String,
    pub state: FlowStage,
    pub methods: Vec<Method>,
    pub expires_at: DateTime<Utc>,
    pub attempts_left: u32,
    pub resend_available_at: Option<DateTime<Utc>>,
}

/// What `CreateCaptcha` hands out: the picture, the proof of work, or both, and what
/// `StartRecovery` will check of them (`check`), so a front end asks only for that.
#[derive(Debug, Clone)]
pub struct CaptchaChallenge {
    /// Empty when no picture is asked for.
    pub captcha_id: String,
    pub image_png: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub pow: Option<ProofOfWork>,
    pub check: CaptchaCheck,
}

pub struct IssuedToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

pub struct PasswordCheck {
    pub violations: Vec<PolicyViolation>,
    pub strength: u8,
}

impl Recovery {
    pub(crate) fn view(&self, flow: &Flow) -> FlowView {
        FlowView {
            flow_id: flow.id.clone(),
            state: flow.state.stage(),
            methods: flow.methods.clone(),
            expires_at: flow.expires_at,
            attempts_left: flow.attempts_left(&self.settings.flow),
            resend_available_at: flow.resend_available_at,
        }
    }

    pub(crate) fn login_key(&self, login: &LoginId) -> String {
        self.keys
            .sign(LOGIN_PURPOSE, &[login.normalized().as_bytes()])
    }

    async fn load_live(
        &self,
        flow_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Versioned<Flow>, RecoveryError> {
        let loaded = self
            .read_flow(flow_id)
            .await?
            .ok_or(RecoveryError::FlowNotFound)?;
        loaded.value.ensure_alive(now)?;
        Ok(loaded)
    }

    #[tracing::instrument(skip_all)]
    pub async fn create_captcha(
        &self,
        ctx: &RequestContext,
    ) -> Result<CaptchaChallenge, RecoveryError> {
        self.limit_caller(ctx, "CreateCaptcha").await?;
        let now = self.clock.now();
        let check = self.settings.captcha_check();
        let expires_at = after(now, self.settings.captcha_ttl);
        let pow = if check.work() {
            // Work instead of a person is dearer than work beside one.
            let max_number = if check == CaptchaCheck::DigitsOrWork {
                self.settings.pow_alternative_max_number
            } else {
                self.settings.pow_max_number
            };
            let pow = ProofOfWork::issue(&self.keys, expires_at, max_number)
                .map_err(RecoveryError::internal)?;
            Some(pow)
        } else {
            None
        };
        // Pow-only answers with no picture. Off still draws one (never checked), as it always
        // has: front ends and scripts written for the picture keep working when it is switched
        // off, and `check` tells a front end that nothing needs to be typed.
        if check == CaptchaCheck::Work {
            return Ok(CaptchaChallenge {
                captcha_id: String::new(),
                image_png: Vec::new(),
                expires_at: pow.as_ref().map_or(expires_at, |p| p.expires_at),
                pow,
                check,
            });
        }
        let answer = match &self.captcha_answers {
            Some(source) => source(),
            None => keys::random_digits(self.settings.captcha_digits)
                .map_err(RecoveryError::internal)?,
        };
        let seed = keys::random_bytes::<32>().map_err(RecoveryError::internal)?;
        let id = uuid::Uuid::new_v4().to_string();
        let record = CaptchaRecord::new(id.clone(), &answer, &self.keys, expires_at);
        let image_png = self
            .cpu_pool
            .run(move || super::captcha_image::render_png(&answer, seed))
            .await
            .map_err(|error| match error {
                BlockingError::Busy => RecoveryError::RateLimited {
                    retry_after: Duration::from_secs(1),
                    scope: "captcha",
                },
                BlockingError::Failed(detail) => RecoveryError::Internal(anyhow::anyhow!(detail)),
            })?
            .map_err(RecoveryError::internal)?;
        self.store
            .put_captcha(&record, self.settings.captcha_ttl)
            .await?;
        Ok(CaptchaChallenge {
            captcha_id: id,
            image_png,
            expires_at,
            pow,
            check,
        })
    }

    /// A proof of work that we issued, solved, unexpired and never spent before. Spending it is
    /// one atomic claim in the store, so two concurrent replays cannot both pass.
    async fn spend_pow(
        &self,
        solution: &PowSolution,
        now: DateTime<Utc>,
    ) -> Result<(), RecoveryError> {
        let expires_at = solution.verify(&self.keys, now).map_err(|rejection| {
            tracing::info!(?rejection, "proof of work refused");
            RecoveryError::captcha_invalid("pow_solution")
        })?;
        let remember = (expires_at - now).to_std().unwrap_or_default();
        if !self
            .store
            .claim_once(&solution.spent_key(), remember)
            .await?
        {
            tracing::info!("proof of work refused: already spent");
            return Err(RecoveryError::captcha_invalid("pow_solution"));
        }
        Ok(())
    }

    /// `StartRecovery`. Known and unknown logins take the same path with the same store and
    /// database operations; only the flow's hidden `account_id` differs.
    #[tracing::instrument(skip_all, fields(flow_id))]
    pub async fn start(
        &self,
        ctx: &RequestContext,
        command: StartRecovery,
    ) -> Result<FlowView, RecoveryError> {
        let StartRecovery {
            login,
            captcha,
            pow_solution,
            locale,
            device_token,
        } = command;
        self.limit_caller(ctx, "StartRecovery").await?;
        let now = self.clock.now();
        self.check_captcha(captcha.as_ref(), pow_solution.as_ref(), now)
            .await?;
        let login_key = self.login_key(&login);
        // A start naming a device token looks the account up first, known login or not, and the
        // account's own device is not held back by the per-login start limit (which an attacker
        // can spend with a few captchas an hour). Any other token is answered as none.
        let looked_up = match &device_token {
            Some(_) => Some(self.accounts.find_by_login(login.normalized()).await?),
            None => None,
        };
        let own_device = looked_up
            .as_ref()
            .is_some_and(|account| self.known_device(device_token.as_ref(), account.as_ref(), now));
        // Otherwise before the account lookup: a limited answer must not depend on whether it
        // exists.
        if !own_device {
            self.limit(ctx, "StartRecovery", LimitScope::Login(&login_key))
                .await?;
        }
        let account = match looked_up {
            Some(account) => account,
            None => self.accounts.find_by_login(login.normalized()).await?,
        };
        // A reported ("it wasn't me") account is frozen: its starts become decoys, exactly as
        // for an unknown login (same answer, same writes, nothing delivered). The freeze is read
        // for unknown logins too, so both make the same store calls.
        let owner = Flow::owner_of(account.as_ref().map(|a| a.id.as_str()), &login_key);
        let frozen = self.store.recovery_frozen(&owner).await?;
        let (account, frozen_account) = if frozen {
            (None, account)
        } else {
            (account, None)
        };
        let known_device = self.known_device(device_token.as_ref(), account.as_ref(), now);
        // Methods come from what was typed, never from the account: showing the address on
        // file would tell an attacker the account exists.
        let methods = vec![Method {
            channel: Channel::Email,
            masked_destination: mask_email(login.typed()),
        }];
        let flow = self
            .open_flow(
                account.as_ref(),
                login_key,
                methods,
                locale,
                FlowOrigin::SelfService { known_device },
                now,
            )
            .await?;
        let mut record = self.audit(
            "recovery.started",
            Some(&flow),
            ctx,
            if frozen_account.is_some() {
                "frozen"
            } else {
                "ok"
            },
        );
        if let Some(account) = frozen_account {
            record.account_id = Some(account.id.clone());
        }
        if known_device {
            // An auditor sees which starts drew on the reserved mail budget.
            record.detail = Some(serde_json::json!({ "known_device": true }).to_string());
        }
        self.record(record).await;
        Ok(self.view(&flow))
    }

    /// Whether `token` is the live device token of `account` (the browser that last reset its
    /// password). Compared in constant time under every key, and against a stand-in when there
    /// is no account or no token on it, so known and unknown logins, foreign and forged tokens
    /// all take the same steps; a wrong token is simply not a known device, never an error.
    fn known_device(
        &self,
        token: Option<&DeviceToken>,
        account: Option<&Account>,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(token) = token else {
            return false;
        };
        const NO_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        let (stored, live) = account
            .and_then(|account| account.device_token.as_ref())
            .map_or((NO_TOKEN, false), |(mac, expires_at)| {
                (mac.as_str(), now < *expires_at)
            });
        let matches = self
            .keys
            .verify(DEVICE_PURPOSE, &[token.expose().as_bytes()], stored);
        matches && live
    }

    /// The captcha of a `StartRecovery`, as `CaptchaCheck` asks: first that what it needs is
    /// there, then every proof it checks that was sent (a wrong one is refused even when the
    /// other would pass), each spent by the check.
    async fn check_captcha(
        &self,
        captcha: Option<&CaptchaAnswer>,
        pow_solution: Option<&PowSolution>,
        now: DateTime<Utc>,
    ) -> Result<(), RecoveryError> {
        let check = self.settings.captcha_check();
        let typed = captcha.and_then(CaptchaAnswer::typed);
        let mut missing = Vec::new();
        if check == CaptchaCheck::DigitsOrWork && typed.is_none() && pow_solution.is_none() {
            // Neither way through was sent: a call missing its captcha, as in image mode without
            // the alternative (nothing was taken, so the picture still takes its digits once).
            if captcha.is_none() {
                missing.push(FieldViolation::new(
                    "captcha_id",
                    "is required with captcha_answer: call CreateCaptcha first",
                ));
            }
            missing.push(FieldViolation::new(
                "captcha_answer",
                "type the digits of the picture, or send pow_solution instead",
            ));
            missing.push(FieldViolation::new(
                "pow_solution",
                "solve the proof of work from CreateCaptcha, or type the digits instead",
            ));
        }
        if matches!(check, CaptchaCheck::Digits | CaptchaCheck::DigitsAndWork) && typed.is_none() {
            if captcha.is_none() {
                missing.push(FieldViolation::new(
                    "captcha_id",
                    "is required: call CreateCaptcha first",
                ));
            }
            missing.push(FieldViolation::new("captcha_answer", "is required"));
        }
        if matches!(check, CaptchaCheck::Work | CaptchaCheck::DigitsAndWork)
            && pow_solution.is_none()
        {
            missing.push(FieldViolation::new(
                "pow_solution",
                "is required: solve the proof of work from CreateCaptcha",
            ));
        }
        if !missing.is_empty() {
            return Err(RecoveryError::InvalidArgument(missing));
        }
        if let (true, Some((id, answer))) = (check.digits(), typed) {
            // Taken (read and deleted) before it is checked: the first answer burns it.
            let record = self.store.take_captcha(id).await?;
            let accepted =
                record.is_some_and(|r| r.accepts(answer.expose_secret(), &self.keys, now));
            if !accepted {
                return Err(RecoveryError::captcha_invalid("captcha_answer"));
            }
        }
        if let (true, Some(solution)) = (check.work(), pow_solution) {
            self.spend_pow(solution, now).await?;
        }
        Ok(())
    }

    /// Writes a new flow and adds it to its owner's open flows.
    pub(crate) async fn open_flow(
        &self,
        account: Option<&Account>,
        login_key: String,
        methods: Vec<Method>,
        locale: String,
        origin: FlowOrigin,
        now: DateTime<Utc>,
    ) -> Result<Flow, RecoveryError> {
        let mut flow = Flow::start(
            uuid::Uuid::new_v4().to_string(),
            account.map(|a| a.id.clone()),
            login_key,
            methods,
            locale,
            now,
            &self.settings.flow,
        );
        flow.password_version = account.map_or(0, |a| a.password_version);
        match origin {
            FlowOrigin::SelfService { known_device } => flow.known_device = known_device,
            FlowOrigin::Helpdesk => flow.helpdesk = true,
        }
        tracing::Span::current().record("flow_id", flow.id.as_str());
        let ttl = flow.remaining(now);
        self.store.insert_indexed_flow(&flow, ttl).await?;
        Ok(flow)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(
        &self,
        ctx: &RequestContext,
        flow_id: &FlowId,
    ) -> Result<FlowView, RecoveryError> {
        self.limit_caller(ctx, "GetRecoveryFlow").await?;
        let now = self.clock.now();
        let flow = self.load_live(flow_id.as_str(), now).await?;
        Ok(self.view(&flow.value))
    }

    /// Applies `transition` to the stored flow with compare-and-swap, retrying when another
    /// request changed the flow in between. Returns the flow as written and the previous one.
    pub(crate) async fn update_flow<T>(
        &self,
        flow_id: &str,
        now: DateTime<Utc>,
        transition: impl FnMut(&Flow) -> Result<(Option<Flow>, T), RecoveryError>,
    ) -> Result<(Versioned<Flow>, Option<Flow>, T), RecoveryError> {
        self.update_loaded_flow(flow_id, None, now, transition)
            .await
    }

    /// `update_flow` whose first attempt starts from `loaded`, a version the caller has just
    /// read (one round trip fewer); later attempts read the flow again.
    pub(crate) async fn update_loaded_flow<T>(
        &self,
        flow_id: &str,
        mut loaded: Option<Versioned<Flow>>,
        now: DateTime<Utc>,
        mut transition: impl FnMut(&Flow) -> Result<(Option<Flow>, T), RecoveryError>,
    ) -> Result<(Versioned<Flow>, Option<Flow>, T), RecoveryError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = match loaded.take() {
                Some(current) => current,
                None => self
                    .read_flow(flow_id)
                    .await?
                    .ok_or(RecoveryError::FlowNotFound)?,
            };
            let (next, outcome) = transition(&current.value)?;
            let Some(next) = next else {
                return Ok((current, None, outcome));
            };
            if self
                .store
                .replace_flow(&next, current.version, next.remaining(now))
                .await?
            {
                return Ok((current, Some(next), outcome));
            }
            tokio::task::yield_now().await;
        }
        Err(RecoveryError::Unavailable(anyhow::anyhow!(
            "flow {flow_id} kept changing under contention"
        )))
    }

    /// Puts back the flow a send replaced (its version is then one past `previous`'s), when the
    /// send must not count: nothing may be consumed by a code that was never mailed.
    async fn restore_flow(&self, previous: &Versioned<Flow>, now: DateTime<Utc>) {
        let _ = self
            .store
            .replace_flow(
                &previous.value,
                previous.version + 1,
                previous.value.remaining(now),
            )
            .await;
    }

    #[tracing::instrument(skip_all, fields(flow_id = %command.flow_id.as_str()))]
    pub async fn send_code(
        &self,
        ctx: &RequestContext,
        command: SendCode,
    ) -> Result<FlowView, RecoveryError> {
        let SendCode { flow_id, channel } = command;
        self.limit_caller(ctx, "SendVerificationCode").await?;
        let (next, _) = self
            .issue_code(ctx, flow_id.as_str(), channel, CodeDelivery::Mail)
            .await?;
        Ok(self.view(&next))
    }

    /// Issues a new code in a flow: the flow's transition, the per-account send budget, the
    /// live-code pointer (one live code per account), the report code and the notice. Returns
    /// the flow as written and the code (which only the helpdesk path hands out).
    pub(crate) async fn issue_code(
        &self,
        ctx: &RequestContext,
        flow_id: &str,
        channel: Option<Channel>,
        delivery: CodeDelivery,
    ) -> Result<(Flow, SecretString), RecoveryError> {
        let now = self.clock.now();
        let settings = &self.settings.flow;
        let loaded = self
            .read_flow(flow_id)
            .await?
            .ok_or(RecoveryError::FlowNotFound)?;
        // Once the owner's anonymous guess budget is spent, a self-service code is a long one
        // (100 bits): the owner can still verify, and guessing it is hopeless. Read for every
        // self-service send, known login or not, so decoys get long codes at the same point.
        // Helpdesk flows are not weighed by that budget, so they keep the short code.
        let long = delivery == CodeDelivery::Mail
            && !loaded.value.helpdesk
            && self.guess_budget_spent(&loaded.value.owner()).await?;
        let mut issued_code = None;
        let mut capped_flow = None;
        let updated = self
            .update_loaded_flow(flow_id, Some(loaded), now, |flow| {
                flow.ensure_alive(now)?;
                let channel = flow.pick_channel(channel)?;
                let code = if long {
                    keys::random_long_code()
                } else {
                    keys::random_digits(settings.code_digits)
                }
                .map_err(RecoveryError::internal)?;
                let mac = self
                    .keys
                    .sign(CODE_PURPOSE, &[flow.id.as_bytes(), code.as_bytes()]);
                let next = flow
                    .send_code(channel, mac, now, settings)
                    .inspect_err(|error| {
                        if matches!(error, RecoveryError::RateLimited { .. }) {
                            capped_flow = Some(flow.clone());
                        }
                    })?;
                let next = if long { next.with_long_code() } else { next };
                issued_code = Some(SecretString::from(code));
                Ok((Some(next), ()))
            })
            .await;
        let (previous, next, ()) = match updated {
            Ok(updated) => updated,
            Err(error) => {
                if let (RecoveryError::RateLimited { scope, .. }, Some(flow)) =
                    (&error, &capped_flow)
                {
                    // The per-flow send cap is a mail-flooding defence: audit it like the
                    // other limits.
                    tracing::info!("code send refused: send cap reached");
                    self.record_limited(
                        ctx,
                        "SendVerificationCode",
                        scope,
                        &format!("rl:flow:{}", flow.id),
                        flow.remaining(now).max(Duration::from_secs(1)),
                        Some(flow),
                        None,
                    )
                    .await;
                } else if matches!(error, RecoveryError::ResendTooSoon { .. }) {
                    tracing::info!("code send refused: resend cooldown");
                }
                return Err(error);
            }
        };
        let (Some(next), Some(code)) = (next, issued_code) else {
            return Err(RecoveryError::internal(anyhow::anyhow!(
                "send transition wrote nothing"
            )));
        };
        let code_expires_at = match &next.state {
            FlowState::CodeSent {
                code_expires_at, ..
            } => *code_expires_at,
            _ => next.expires_at,
        };
        // The per-account mail cap, counted only for a send the flow allowed (a cooldown refusal
        // mails nothing). Past it the flow is put back as it was: no code was issued. A flow
        // started with the account's device token draws on a budget anonymous callers cannot
        // spend; the helpdesk draws on none (its calls are budgeted per caller).
        let owner = next.owner();
        let mail_budget = match delivery {
            CodeDelivery::Mail if next.known_device => {
                Some(LimitScope::SendCodeKnownDevice(&owner))
            }
            CodeDelivery::Mail => Some(LimitScope::SendCode(&owner)),
            CodeDelivery::HelpdeskMail | CodeDelivery::ReturnToCaller => None,
        };
        if let Some(scope) = mail_budget
            && let Err(error) = self.limit(ctx, "SendVerificationCode", scope).await
        {
            self.restore_flow(&previous, now).await;
            return Err(error);
        }
        // Everything after the flow changed can fail (the database is down, say); then the flow
        // is put back below, so nothing is consumed. The recipient lookup is inside for that
        // reason: the soak (benches/SOAK.md) found sends answered UNAVAILABLE during a database
        // restart that had spent the cooldown, when the lookup ran before this point.
        let sent = async {
            // From here this flow holds the owner's only live code: codes of its other flows
            // stop verifying. Written for unknown logins too (same writes), and before the
            // notice, so a failure leaves codes dead rather than two alive.
            self.store
                .set_live_code(&owner, &next.id, settings.code_ttl)
                .await?;
            if delivery == CodeDelivery::ReturnToCaller {
                // The helpdesk hands the code over out of band: nothing is mailed, so there is
                // no report code either.
                return Ok(());
            }
            // Same lookup for unknown logins (by an id that cannot exist), so the database sees
            // the same work.
            let lookup_id = next
                .account_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::nil().to_string());
            // A frozen owner (reported "it wasn't me") gets a decoy: the flow answers as usual
            // and nothing is delivered. Read for every send so all make the same calls.
            let frozen =
                delivery == CodeDelivery::Mail && self.store.recovery_frozen(&owner).await?;
            let account = self
                .accounts
                .find_by_id(&lookup_id)
                .await?
                .filter(|_| !frozen);
            let recipient = account.as_ref().map(|account| account.email.clone());
            let report_code = issue_report_code(self, account.as_ref()).await?;
            let notice = Notice {
                kind: MessageKind::VerificationCode,
                account_id: recipient.as_ref().map(|_| lookup_id.clone()),
                to: recipient,
                locale: next.locale.clone(),
                masked_login: next
                    .methods
                    .first()
                    .map(|m| m.masked_destination.clone())
                    .unwrap_or_default(),
                // A long code is mailed in groups of four, which are easier to copy by eye.
                code: Some(if long {
                    SecretString::from(group_long_code(code.expose_secret()))
                } else {
                    code.clone()
                }),
                report_code: Some(report_code),
                expires_at: code_expires_at,
                changed_at: None,
                // Who asked: this request, which issued the code.
                requested_at: Some(now),
                client_ip: ctx.client_ip.map(|ip| ip.to_string()),
                user_agent: ctx.user_agent.clone(),
            };
            self.deliveries
                .send(&notice, now)
                .await
                .map_err(RecoveryError::from)
        }
        .await;
        if let Err(error) = sent {
            // Nothing may be consumed by a failed send: put the flow back as it was so the
            // cooldown and the send cap are not spent on a message that was never queued.
            self.restore_flow(&previous, now).await;
            return Err(error);
        }
        let result = match delivery {
            CodeDelivery::Mail | CodeDelivery::HelpdeskMail => "ok",
            CodeDelivery::ReturnToCaller => "returned",
        };
        self.record(self.audit("recovery.code_sent", Some(&next), ctx, result))
            .await;
        Ok((next, code))
    }

    #[tracing::instrument(skip_all, fields(flow_id = %command.flow_id.as_str()))]
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        command: VerifyCode,
    ) -> Result<IssuedToken, RecoveryError> {
        let VerifyCode { flow_id, code } = command;
        let flow_id = flow_id.as_str();
        self.limit_caller(ctx, "VerifyCode").await?;
        let now = self.clock.now();
        let settings = &self.settings.flow;
        let digits = settings.code_digits as usize;
        // A long code has one length whatever `code_digits` is; a short one must have the
        // configured number of digits. Either shape is accepted here for every flow (the flow's
        // kind of code is not revealed by the answer): the wrong shape is simply a wrong code.
        if !code.is_long() && code.expose().len() != digits {
            return Err(RecoveryError::InvalidArgument(vec![
                VerificationCode::wrong_shape("code", digits),
            ]));
        }
        // The flow is read first: a flow that does not exist gets nothing written for it.
        let loaded = self
            .read_flow(flow_id)
            .await?
            .ok_or(RecoveryError::FlowNotFound)?;
        let flow = &loaded.value;
        // The per-account budget is spent before any code is weighed, and by every code that
        // would be (the right one too): counting first is what keeps a burst of concurrent
        // guesses from overshooting it, and past it not even the right code is weighed. The dry
        // run of the pure transition says whether this call would weigh one at all.
        let would_weigh = matches!(
            flow.verify_code(false, String::new(), now, settings)
                .outcome,
            Err(RecoveryError::CodeInvalid { .. })
        );
        // Helpdesk flows and long codes are weighed only by the flow's own `max_attempts`:
        // the anonymous budget is what an attacker spends, and it must not lock these out.
        if would_weigh && flow.guesses_count_against_account() {
            self.limit(ctx, "VerifyCode", LimitScope::VerifyCode(&flow.owner()))
                .await?;
        }
        // One live code per account: once another flow of the owner sent a code, this flow's
        // code is wrong, answered and counted exactly like any wrong code. No pointer means no
        // code was sent for the owner within a code's lifetime, so none is newer than this one.
        let live = self
            .store
            .live_code(&flow.owner())
            .await?
            .is_none_or(|live_flow| live_flow == flow.id);
        let code_matches = |flow: &Flow| {
            live && match &flow.state {
                FlowState::CodeSent { code_mac, .. } => self.keys.verify(
                    CODE_PURPOSE,
                    &[flow.id.as_bytes(), code.expose().as_bytes()],
                    code_mac,
                ),
                _ => false,
            }
        };
        // The index entry is written before the flow changes: it is harmless until the flow
        // says VERIFIED with this very token, and writing it after could lose it and strand a
        // verified flow. A code that does not match the flow as read needs no token (the
        // cheap, common refusal: one read and one write in the store).
        // The reset token is drawn and signed only then: a wrong code never needs one
        // (every wrong code paid a random draw and a MAC for nothing).
        let token_indexed = code_matches(flow);
        let issued = if token_indexed {
            let token = SecretString::from(keys::random_token().map_err(RecoveryError::internal)?);
            let token_mac = self
                .keys
                .sign(TOKEN_PURPOSE, &[token.expose_secret().as_bytes()]);
            self.store
                .put_token(&token_mac, flow_id, settings.token_ttl)
                .await?;
            Some((token, token_mac))
        } else {
            None
        };
        let (current, next, outcome) = self
            .update_loaded_flow(flow_id, Some(loaded), now, |flow| {
                let matches = code_matches(flow);
                if matches && !token_indexed {
                    // The flow got a new code between the read and now, and this is it: nothing
                    // is written; the caller retries (and then its token is indexed first).
                    return Err(RecoveryError::Unavailable(anyhow::anyhow!(
                        "flow changed during verification"
                    )));
                }
                // Matching here implies `issued` (refused just above otherwise); a flow that
                // does not match never stores the MAC it is given.
                let token_mac = issued
                    .as_ref()
                    .map_or_else(String::new, |(_, mac)| mac.clone());
                let verification = flow.verify_code(matches, token_mac, now, settings);
                Ok((verification.next, verification.outcome))
            })
            .await?;
        let event = match (&outcome, &next) {
            (Ok(()), _) => ("recovery.code_verified", "ok"),
            (Err(RecoveryError::CodeInvalid { attempts_left: 0 }), _) => {
                ("recovery.flow_locked", "locked")
            }
            (Err(RecoveryError::CodeInvalid { .. }), _) => ("recovery.code_failed", "wrong_code"),
            (Err(RecoveryError::CodeExpired), _) => ("recovery.code_failed", "expired"),
            (Err(RecoveryError::AttemptsExhausted), _) => ("recovery.code_failed", "locked"),
            (Err(_), _) => ("recovery.code_failed", "refused"),
        };
        // A refusal writes nothing (`next` is None), but the row still names the flow and its
        // account: repeated tries on a locked or expired flow are what an auditor looks for.
        self.record(self.audit(
            event.0,
            Some(next.as_ref().unwrap_or(&current.value)),
            ctx,
            event.1,
        ))
        .await;
        outcome?;
        let Some((token, _)) = issued else {
            // Unreachable: a verification succeeds only for a code that matched as read.
            return Err(RecoveryError::Internal(anyhow::anyhow!(
                "a code verified without a token"
            )));
        };
        let expires_at = match next.map(|f| f.state) {
            Some(FlowState::Verified {
                token_expires_at, ..
            }) => token_expires_at,
            _ => after(now, settings.token_ttl),
        };
        Ok(IssuedToken { token, expires_at })
    }

    /// The stateless rules plus history: every violation at once. `breach` is the caller of a
    /// call that sets a password (`ResetPassword`, `CreateAccount`), whose per-IP budget an
    /// uncached range fetch spends; `None` (`ValidatePassword`) skips the breach check, so its
    /// answer time never depends on the range cache.
    pub(crate) async fn check_new_password(
        &self,
        password: &SecretString,
        login: Option<&str>,
        email: Option<&str>,
        history: &[String],
        breach: Option<(&RequestContext, &'static str)>,
    ) -> Result<(SecretString, PasswordCheck), RecoveryError> {
        let local = login
            .map(|l| l.split_once('@').map_or(l, |(local, _)| local))
            .map(str::to_owned);
        let inputs: Vec<String> = [login, email]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .chain(local.clone())
            .collect();
        let (policy, candidate) = (self.policy.clone(), password.clone());
        let assessment = self
            .cpu_pool
            .run(move || {
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                policy.assess(candidate.expose_secret(), local.as_deref(), &inputs)
            })
            .await
            .map_err(|error| match error {
                BlockingError::Busy => RecoveryError::RateLimited {
                    retry_after: Duration::from_secs(1),
                    scope: "password_scoring",
                },
                BlockingError::Failed(detail) => RecoveryError::Internal(anyhow::anyhow!(detail)),
            })?;
        let normalized = SecretString::from(assessment.normalized);
        let mut violations = assessment.violations;
        // Only for a password the local rules accept: the range request is a network round
        // trip, and a refused password needs no second reason.
        if let (true, Some(check), Some((ctx, operation))) =
            (violations.is_empty(), &self.breach, breach)
        {
            let found = check
                .check(normalized.expose_secret(), || async move {
                    match ctx.client_ip {
                        Some(ip) => {
                            self.limit(ctx, operation, LimitScope::BreachFetch(ip))
                                .await
                        }
                        None => Ok(()),
                    }
                })
                .await?;
            violations.extend(found);
        }
        // Only hash-compare a password that could otherwise be accepted: argon2 is expensive,
        // and the length bound has already been enforced.
        if violations.is_empty()
            && !history.is_empty()
            && self.hasher.matches_any(&normalized, history).await?
        {
            violations.push(PasswordPolicy::reused_violation());
        }
        Ok((
            normalized,
            PasswordCheck {
                violations,
                strength: assessment.strength,
            },
        ))
    }

    #[tracing::instrument(skip_all)]
    pub async fn validate_password(
        &self,
        ctx: &RequestContext,
        command: &ValidatePassword,
    ) -> Result<PasswordCheck, RecoveryError> {
        self.limit_caller(ctx, "ValidatePassword").await?;
        let login = command.login.as_ref().map(LoginId::normalized);
        let (_, check) = self
            .check_new_password(&command.password, login, None, &[], None)
            .await?;
        Ok(check)
    }

    #[tracing::instrument(skip_all, fields(flow_id = %flow_id.as_str()))]
    pub async fn cancel(
        &self,
        ctx: &RequestContext,
        flow_id: &FlowId,
    ) -> Result<(), RecoveryError> {
        let flow_id = flow_id.as_str();
        self.limit_caller(ctx, "CancelRecovery").await?;
        let now = self.clock.now();
        let flow = self.load_live(flow_id, now).await?;
        // Of two cancels at once, the one that did not remove the flow found it gone.
        if !self.store.delete_flow(flow_id).await? {
            return Err(RecoveryError::FlowNotFound);
        }
        self.record(self.audit("recovery.cancelled", Some(&flow.value), ctx, "ok"))
            .await;
        Ok(())
    }
}
