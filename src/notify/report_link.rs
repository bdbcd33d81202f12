//! The `[mail]` section, and the link of the "it wasn't me" paragraph of the code mail.
//!
//! `report_url` is a template of the deployment's report page, e.g.
//! `https://id.example.com/recovery/report?code={code}`: `{code}` (exactly once) becomes the
//! mail's report code, percent-encoded. It is the one link the mails may carry (see
//! `templates.rs`): mail scanners fetch every URL in a message, so the page behind it must not
//! act on a GET. It shows a button that asks the person to confirm, and only that confirmation
//! calls `ReportUnrequestedRecovery`; otherwise a scanner would report every mail.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `report_url` must contain once, replaced by the percent-encoded report code.
pub const CODE_PLACEHOLDER: &str = "{code}";

/// Left as is in a URL component (RFC 3986 unreserved); everything else is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `[mail]`: what the mails say beyond their templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct MailSettings {
    /// The "it wasn't me" link of the code mail, e.g.
    /// `https://id.example.com/recovery/report?code={code}`: `{code}` (exactly once) is the
    /// report code, percent-encoded; https only (http to a loopback host). Unset: the code mail
    /// shows the report code without a link. The page must ask the person to confirm
    /// (docs/mail.md); the built-in UI has one at `https://<its host>/report?code={code}`.
    pub report_url: Option<String>,
}

impl MailSettings {
    /// The link for `report_code`, or `None` without `report_url`.
    pub fn report_link(&self, report_code: &str) -> Option<String> {
        let template = self.report_url.as_deref()?;
        let encoded = utf8_percent_encode(report_code, COMPONENT).to_string();
        Some(template.replacen(CODE_PLACEHOLDER, &encoded, 1))
    }
}

/// Why `report_url` is refused, or `None` when it is fine: `{code}` exactly once, and an
/// `https` URL (plain `http` only to a loopback host, for development).
pub fn check_report_url(template: &str) -> Option<String> {
    let count = template.matches(CODE_PLACEHOLDER).count();
    if count != 1 {
        return Some(format!(
            "must contain {CODE_PLACEHOLDER} exactly once (found {count} times)"
        ));
    }
    let sample = template.replacen(CODE_PLACEHOLDER, "SAMPLE", 1);
    let url = match url::Url::parse(&sample) {
        Ok(url) => url,
        Err(error) => return Some(format!("is not a URL: {error}")),
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => None,
        "http" if loopback => None,
        _ => Some("must be an https URL (http only to localhost)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_percent_encoded_into_the_placeholder() {
        let mail = MailSettings {
            report_url: Some("https://id.example.com/recovery/report?code={code}".into()),
        };
        assert_eq!(
            mail.report_link("AB12-cd_34").unwrap(),
            "https://id.example.com/recovery/report?code=AB12-cd_34"
        );
        assert_eq!(
            mail.report_link("a b&c=d/#").unwrap(),
            "https://id.example.com/recovery/report?code=a%20b%26c%3Dd%2F%23"
        );
        assert_eq!(MailSettings::default().report_link("x"), None);
    }

    #[test]
    fn report_urls_are_checked() {
        assert_eq!(
            check_report_url("https://id.example.com/r?code={code}"),
            None
        );
        assert_eq!(check_report_url("https://id.example.com/r/{code}"), None);
        assert_eq!(check_report_url("http://127.0.0.1:8080/r?c={code}"), None);
        assert!(check_report_url("https://id.example.com/r").is_some());
        assert!(check_report_url("https://id.example.com/{code}/{code}").is_some());
        assert!(check_report_url("http://id.example.com/r?c={code}").is_some());
        assert!(check_report_url("javascript:alert({code})").is_some());
        assert!(check_report_url("{code}").is_some());
    }
}
