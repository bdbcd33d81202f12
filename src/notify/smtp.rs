//! SMTP notifier (lettre). Placeholder until the SMTP work lands in this session.

use async_trait::async_trait;

use super::{Email, Notifier, NotifyError};
use crate::config::Config;

pub struct SmtpNotifier;

impl SmtpNotifier {
    pub fn from_config(_config: &Config) -> anyhow::Result<Self> {
        anyhow::bail!("the smtp notifier is not built yet")
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, _email: &Email) -> Result<(), NotifyError> {
        Err(NotifyError::Permanent("smtp notifier not built".into()))
    }
}
