//! Which language a flow speaks, for messages about it that are not mails: the API layer asks
//! after an error so the error's `LocalizedMessage` is in the language the person chose at
//! `StartRecovery`. Read-only and best-effort: a flow that is gone, or a store that does not
//! answer, yields `None` and the caller falls back to `accept-language`.
//!
//! A call run inside [`noting_flow_locale`] is told the language of the flow it read, so the
//! answer to a flow-bound error (a wrong code, a refused password) needs no second read of the
//! flow: on Redis that read was one of a wrong VerifyCode's three round trips.

use std::cell::RefCell;
use std::future::Future;

use super::flow::Flow;
use super::handle::{Recovery, TOKEN_PURPOSE};
use super::input::ResetToken;
use super::ports::{StoreError, Versioned};

tokio::task_local! {
    /// The language of the last flow the call read, for `noting_flow_locale`.
    static NOTED_FLOW_LOCALE: RefCell<Option<String>>;
}

/// Runs `call` and returns, with its output, the language of the last flow it read (`None` when
/// it read none, or read it on another task).
pub async fn noting_flow_locale<F: Future>(call: F) -> (F::Output, Option<String>) {
    NOTED_FLOW_LOCALE
        .scope(RefCell::new(None), async move {
            let output = call.await;
            let locale = NOTED_FLOW_LOCALE.with(|noted| noted.borrow_mut().take());
            (output, locale)
        })
        .await
}

impl Recovery {
    /// Reads a flow, noting its language for [`noting_flow_locale`]. Every read of a flow by a
    /// use case goes through here.
    pub(crate) async fn read_flow(
        &self,
        flow_id: &str,
    ) -> Result<Option<Versioned<Flow>>, StoreError> {
        let loaded = self.store.load_flow(flow_id).await?;
        if let Some(flow) = &loaded {
            // Outside `noting_flow_locale` there is nobody to tell.
            let _ = NOTED_FLOW_LOCALE
                .try_with(|noted| *noted.borrow_mut() = Some(flow.value.locale.clone()));
        }
        Ok(loaded)
    }

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
