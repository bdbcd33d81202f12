//! `config check --connect`: proves the relay answers, before any code mail depends on it.

use anyhow::Context;

use super::SmtpNotifier;
use super::pool::SendError;

impl SmtpNotifier {
    /// Opens one connection to the relay (TCP, TLS and AUTH as configured), sends NOOP and
    /// gives the connection back. Bounded by `smtp.send_timeout_ms`, like a send.
    pub async fn check_connection(&self) -> anyhow::Result<()> {
        let connection = tokio::time::timeout(self.send_timeout, self.pool.checkout())
            .await
            .with_context(|| format!("{} did not answer in time", self.endpoint))?;
        match connection {
            Ok(mut connection) => {
                let answered = connection.test_connected().await;
                self.pool.checkin(connection).await;
                anyhow::ensure!(answered, "{} did not answer NOOP", self.endpoint);
                Ok(())
            }
            Err(SendError::Smtp(error)) => {
                Err(anyhow::Error::new(error).context(self.endpoint.to_string()))
            }
            Err(SendError::Connect(reason)) => Err(anyhow::anyhow!("{}: {reason}", self.endpoint)),
        }
    }
}
