//! Which client asked: the product named by a `User-Agent`, for the "who asked" lines of the code
//! mail ("Firefox on Windows", "curl", "unknown client").
//!
//! The header is attacker-controlled, so the mail never shows it: it is cut to
//! [`MAX_USER_AGENT`] characters, parsed by `woothee` (browsers, operating systems, crawlers;
//! a fixed table, no network), or matched against a short table of command-line and library
//! clients; only the names from those tables reach the template, and even they are kept to a
//! small character set. Anything else is "unknown client" (the template's words).

/// Characters of a `User-Agent` that are looked at; the rest is ignored.
pub const MAX_USER_AGENT: usize = 512;

/// Longest product or system name passed to a template.
const MAX_NAME: usize = 40;

/// Client libraries and tools woothee does not know, by the product token the string starts
/// with (case-insensitive), and the name the mail shows.
const TOOLS: &[(&str, &str)] = &[
    ("curl/", "curl"),
    ("wget/", "Wget"),
    ("httpie/", "HTTPie"),
    ("python-requests/", "Python Requests"),
    ("python-httpx/", "Python HTTPX"),
    ("python-urllib/", "Python urllib"),
    ("aiohttp/", "Python aiohttp"),
    ("go-http-client/", "Go HTTP client"),
    ("okhttp/", "OkHttp"),
    ("postmanruntime/", "Postman"),
    ("insomnia/", "Insomnia"),
    ("axios/", "axios"),
    ("node-fetch/", "node-fetch"),
    ("java/", "Java"),
    ("grpc-", "gRPC client"),
    ("tonic/", "gRPC client"),
    ("grpcurl/", "grpcurl"),
];

/// The product and, when known, the operating system of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// "Firefox", "Chrome", "Safari", "curl".
    pub name: String,
    /// "Windows", "Android", "macOS", "iPhone"; `None` when the string does not say.
    pub os: Option<String>,
}

/// The client named by a `User-Agent`, or `None` when it names nothing known.
pub fn describe(user_agent: &str) -> Option<Client> {
    let agent: String = user_agent
        .chars()
        .take(MAX_USER_AGENT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let agent = agent.trim();
    if agent.is_empty() {
        return None;
    }
    let lower = agent.to_ascii_lowercase();
    if let Some((_, name)) = TOOLS.iter().find(|(token, _)| lower.starts_with(token)) {
        return Some(Client {
            name: (*name).to_owned(),
            os: None,
        });
    }
    let parsed = woothee::parser::Parser::new().parse(agent)?;
    let name = clean(parsed.name)?;
    let os = clean(parsed.os).map(|os| os_name(&os));
    Some(Client { name, os })
}

/// The system as people call it. Windows 11 still says "Windows NT 10.0", so no Windows
/// version is claimed; woothee's "Mac OSX" is macOS.
fn os_name(os: &str) -> String {
    if os.starts_with("Windows 10") || os.starts_with("Windows UNKNOWN") {
        "Windows".to_owned()
    } else if os == "Mac OSX" {
        "macOS".to_owned()
    } else {
        os.to_owned()
    }
}

/// A name from woothee's table, or `None` for its "UNKNOWN". Kept to letters, digits and a few
/// separators whatever the table says, so nothing odd can reach a template.
fn clean(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.eq_ignore_ascii_case(woothee::woothee::VALUE_UNKNOWN) {
        return None;
    }
    let kept: String = name
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_' | '/' | '(' | ')'))
        .take(MAX_NAME)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(agent: &str) -> (String, Option<String>) {
        let client = describe(agent).unwrap_or_else(|| panic!("{agent}: not recognised"));
        (client.name, client.os)
    }

    #[test]
    fn browsers_and_their_systems_are_named() {
        let firefox_windows =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(
            named(firefox_windows),
            ("Firefox".into(), Some("Windows".into()))
        );
        let chrome_android = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
        assert_eq!(
            named(chrome_android),
            ("Chrome".into(), Some("Android".into()))
        );
        let safari_iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) \
                             AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 \
                             Safari/604.1";
        let safari_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
        assert_eq!(named(safari_mac), ("Safari".into(), Some("macOS".into())));
        assert_eq!(
            named(safari_iphone),
            ("Safari".into(), Some("iPhone".into()))
        );
    }

    #[test]
    fn tools_are_named_by_their_product_token() {
        assert_eq!(named("curl/8.5.0"), ("curl".into(), None));
        assert_eq!(
            named("python-requests/2.32"),
            ("Python Requests".into(), None)
        );
        assert_eq!(named("grpc-go/1.68.0"), ("gRPC client".into(), None));
    }

    #[test]
    fn unknown_or_empty_agents_name_nothing() {
        assert_eq!(describe(""), None);
        assert_eq!(describe("   "), None);
        assert_eq!(describe("totally-made-up-agent"), None);
    }

    #[test]
    fn nothing_of_a_hostile_agent_reaches_the_mail() {
        let hostile = "<script>alert(1)</script>\r\nBcc: evil@example.com http://evil.example/";
        assert_eq!(describe(hostile), None);
        let long = format!(
            "Mozilla/5.0 (Windows NT 10.0) Firefox/1.0 {}",
            "A".repeat(100_000)
        );
        let client = describe(&long).unwrap();
        assert!(client.name.len() <= MAX_NAME);
        // A crafted name in the product slot never comes back verbatim.
        let crafted = "Mozilla/5.0 (Windows NT 10.0) Firefox/1.0<img src=x>";
        let client = describe(crafted).unwrap();
        assert!(!client.name.contains('<') && !client.name.contains('>'));
    }
}
