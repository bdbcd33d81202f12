//! Which language a flow speaks, for messages about it that are not mails: the API layer asks
//! after an error so the error's `LocalizedMessage` is in the language the person chose at
//! `StartRecovery`. Read-only and best-effort: a flow that is gone, or a store that does not
//! answer, yields `None` and the caller falls back to `accept-language`.

use super::handle::{Recovery, TOKEN_PURPOSE};
use super::input::ResetToken;

impl Recovery {
    pub async fn flow_locale(&self, flow_id: &str) -> Option<String> {
        let flow = self.store.load_flow(flow_id).await.ok()??;
        Some(flow.value.locale)
    }

    /// The locale of the flow a reset token belongs to (any key of the ring may have signed it).
    pub async fn token_locale(&self, token: &ResetToken) -> Option<String> {
        for mac in self
            .keys
            .sign_all(TOKEN_PURPOSE, &[token.expose().as_bytes()])
        {
            if let Some(flow_id) = self.store.token_flow(&mac).await.ok()? {
                return self.flow_locale(&flow_id).await;
            }
        }
        None
    }
}
