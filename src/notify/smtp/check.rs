//! `config check --connect`: proves the relay answers, before any code mail depends on it.

use anyhow::Context;

use super::SmtpNotifier;

impl SmtpNotifier {
    /// Opens one connection to the relay (TCP, TLS and AUTH as configured), sends NOOP and
    /// gives the connection back. Bounded by `smtp.send_timeout_ms`, like a send.
    pub async fn check_connection(&self) -> anyhow::Result<()> {
        let answered = tokio::time::timeout(self.send_timeout, self.transport().test_connection())
            .await
            .with_context(|| format!("{} did not answer in time", self.endpoint))?
            .with_context(|| format!("{}", self.endpoint))?;
        anyhow::ensure!(answered, "{} did not answer NOOP", self.endpoint);
        Ok(())
    }
}
