//! Codes read from a real mailbox: the maildrop directory of `tests/support/smtp_sink.py`
//! (aiosmtpd), which stores the n-th accepted message as `<n>.eml`, renamed into place whole.
//!
//! One task follows the numbers in order and hands each verification code to whoever waits
//! for that recipient; a code that arrives before anyone asks is kept until asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use mailparse::MailHeaderMap;
use tokio::sync::oneshot;

#[derive(Default)]
struct Mailboxes {
    waiting: HashMap<String, oneshot::Sender<String>>,
    arrived: HashMap<String, Vec<String>>,
}

#[derive(Clone)]
pub struct Maildrop {
    boxes: Arc<Mutex<Mailboxes>>,
}

impl Maildrop {
    /// Follows `dir` from the first message not there yet (older ones belong to earlier runs).
    pub fn watch(dir: PathBuf) -> anyhow::Result<Self> {
        let mut next = 1u64;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("maildrop {dir:?}"))? {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".eml"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
        }
        let boxes = Arc::new(Mutex::new(Mailboxes::default()));
        let drop = Self {
            boxes: boxes.clone(),
        };
        tokio::spawn(follow(dir, next, boxes));
        Ok(drop)
    }

    /// The next verification code mailed to `recipient` (one that arrived unclaimed first),
    /// waiting at most `timeout`.
    pub async fn code_for(&self, recipient: &str, timeout: Duration) -> anyhow::Result<String> {
        let key = recipient.to_ascii_lowercase();
        let receiver = {
            let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(code) = boxes.arrived.get_mut(&key).and_then(Vec::pop) {
                return Ok(code);
            }
            let (sender, receiver) = oneshot::channel();
            boxes.waiting.insert(key, sender);
            receiver
        };
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(code)) => Ok(code),
            _ => bail!("no code mailed to {recipient} within {timeout:?}"),
        }
    }
}

async fn follow(dir: PathBuf, mut next: u64, boxes: Arc<Mutex<Mailboxes>>) {
    loop {
        let path = dir.join(format!("{next}.eml"));
        match tokio::fs::read(&path).await {
            Ok(raw) => {
                next += 1;
                if let Some((to, code)) = parse_code_mail(&raw) {
                    let mut boxes = boxes.lock().unwrap_or_else(|p| p.into_inner());
                    match boxes.waiting.remove(&to) {
                        Some(waiter) => {
                            let _ = waiter.send(code);
                        }
                        None => boxes.arrived.entry(to).or_default().push(code),
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// `(recipient, code)` of a verification-code message; `None` for any other message.
pub fn parse_code_mail(raw: &[u8]) -> Option<(String, String)> {
    let mail = mailparse::parse_mail(raw).ok()?;
    let to = mail.headers.get_first_value("To")?;
    let address = to
        .rsplit_once('<')
        .map_or(to.as_str(), |(_, rest)| rest.trim_end_matches('>'))
        .trim()
        .to_ascii_lowercase();
    let text = plain_text(&mail)?;
    Some((address, six_digits(&text)?))
}

fn plain_text(mail: &mailparse::ParsedMail<'_>) -> Option<String> {
    if mail.subparts.is_empty() {
        return mail.get_body().ok();
    }
    mail.subparts
        .iter()
        .find(|part| part.ctype.mimetype == "text/plain")
        .and_then(|part| part.get_body().ok())
}

/// The first run of exactly six digits: the code (the templates print no other).
fn six_digits(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut start = None;
    for (i, &b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == 6 {
                    return text.get(s..i).map(str::to_owned);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

/// Whether `dir` looks like a maildrop (exists and is a directory).
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("--maildrop {dir:?} is not a directory");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_six_digit_code_and_nothing_else() {
        assert_eq!(six_digits("code:\n    482915\n").as_deref(), Some("482915"));
        assert_eq!(six_digits("10 minutes, 2026-12-01 and 1234567"), None);
        assert_eq!(six_digits("123456").as_deref(), Some("123456"));
    }
}
