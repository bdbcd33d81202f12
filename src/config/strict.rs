//! Unknown keys are errors. serde skips a key it does not know, so a typo (`[rate_limit]`,
//! `code_ttl_sec`) used to start the service with the default in force while the operator
//! believed otherwise. Here the merged configuration (file and environment) is deserialized once
//! more with `serde_ignored`, which reports every key that was skipped; each becomes an error that
//! names where it came from and the closest known key.
//!
//! Environment variables: every `RECOVERY_*` variable is part of the configuration (nested keys
//! with `__`), except `RECOVERY_CONFIG` (the file's path) and the families [`is_configuration`]
//! names (the test suite's `RECOVERY_TEST_*`, Kubernetes service links).

use figment::Figment;
use figment::value::Value;

use super::Config;

/// Whether `RECOVERY_<name>` is configuration. Two families are not, and are left alone:
/// - `RECOVERY_TEST_*`: the test suite's own variables;
/// - what Kubernetes injects for a Service named `recovery` (service links):
///   `RECOVERY_SERVICE_HOST`, `RECOVERY_SERVICE_PORT[_<name>]`, `RECOVERY_PORT[_<n>_TCP[_*]]`.
///   Every pod in the namespace gets them; refusing them would stop the service from starting in
///   the very deployment `deploy/k8s` describes.
pub(super) fn is_configuration(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let service_link = name == "service_host"
        || name == "service_port"
        || name.starts_with("service_port_")
        || name == "port"
        || name.starts_with("port_");
    !(name.starts_with("test_") || service_link)
}

/// One key that nothing reads, as `["rate_limit", "enabled"]`.
type KeyPath = Vec<String>;

fn segments(path: &serde_ignored::Path<'_>, out: &mut KeyPath) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(index.to_string());
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(key.clone());
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

/// Every key of the configuration, as the tree of `Config::default()`. JSON keeps unset options
/// (as null), which TOML would drop; the two secrets are never serialized, so they are added.
fn known_tree() -> serde_json::Value {
    let mut tree = serde_json::to_value(Config::default()).unwrap_or_default();
    if let Some(root) = tree.as_object_mut() {
        for secret in ["secret", "smtp_url"] {
            root.insert(secret.to_owned(), serde_json::Value::Null);
        }
    }
    tree
}

fn all_paths(tree: &serde_json::Value, prefix: &mut KeyPath, out: &mut Vec<KeyPath>) {
    if let Some(map) = tree.as_object() {
        for (key, value) in map {
            prefix.push(key.clone());
            out.push(prefix.clone());
            all_paths(value, prefix, out);
            prefix.pop();
        }
    }
}

/// The known key closest to `unknown`, judged on the last name: a sibling spelled alike
/// ("rate_limit" -> "rate_limits") or the same name in another section ("captcha_digit" at the
/// top -> "flow.captcha_digits"). Siblings win ties; nothing under 0.8 (Jaro-Winkler) is offered.
fn closest(unknown: &KeyPath, tree: &serde_json::Value) -> Option<KeyPath> {
    let (name, parent) = unknown.split_last()?;
    let name = name.to_lowercase();
    let mut paths = Vec::new();
    all_paths(tree, &mut Vec::new(), &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let (last, path_parent) = path.split_last()?;
            let sibling = if path_parent == parent { 0.01 } else { 0.0 };
            let score = strsim::jaro_winkler(&name, last) + sibling;
            (score >= 0.8).then_some((score, path))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, path)| path)
}

pub(super) fn env_name(path: &[String]) -> String {
    format!("RECOVERY_{}", path.join("__").to_uppercase())
}

/// One message per key that nothing reads; empty when every key is known.
pub(super) fn unknown_keys(figment: &Figment) -> Vec<String> {
    let Ok(value) = figment.extract::<Value>() else {
        // The typed extraction already failed with its own error.
        return Vec::new();
    };
    let mut unknown: Vec<KeyPath> = Vec::new();
    let _: Result<Config, _> = serde_ignored::deserialize(&value, |path| {
        let mut keys = Vec::new();
        segments(&path, &mut keys);
        unknown.push(keys);
    });
    let tree = known_tree();
    unknown
        .into_iter()
        .map(|path| {
            let dotted = path.join(".");
            let from_env = figment
                .find_metadata(&dotted)
                .is_some_and(|meta| meta.name.contains("environment"));
            let suggestion = closest(&path, &tree);
            if from_env {
                let hint = suggestion
                    .map(|known| format!("; did you mean `{}`?", env_name(&known)))
                    .unwrap_or_default();
                format!("unknown environment variable `{}`{hint}", env_name(&path))
            } else {
                let source = figment
                    .find_metadata(&dotted)
                    .and_then(|meta| meta.source.as_ref())
                    .map(|source| format!(" in {source}"))
                    .unwrap_or_default();
                let hint = suggestion
                    .map(|known| format!("; did you mean `{}`?", known.join(".")))
                    .unwrap_or_default();
                format!("unknown key `{dotted}`{source}{hint}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn a_misspelt_section_is_matched_to_its_sibling() {
        let tree = known_tree();
        assert_eq!(
            closest(&path(&["rate_limit"]), &tree),
            Some(path(&["rate_limits"]))
        );
        assert_eq!(
            closest(&path(&["flow", "code_ttl_sec"]), &tree),
            Some(path(&["flow", "code_ttl_secs"]))
        );
    }

    #[test]
    fn a_key_in_the_wrong_section_points_to_its_section() {
        let tree = known_tree();
        assert_eq!(
            closest(&path(&["max_attempts"]), &tree),
            Some(path(&["flow", "max_attempts"]))
        );
    }

    #[test]
    fn a_close_name_elsewhere_beats_a_loose_sibling() {
        assert_eq!(
            closest(&path(&["captcha_digit"]), &known_tree()),
            Some(path(&["flow", "captcha_digits"]))
        );
    }

    #[test]
    fn a_key_like_nothing_gets_no_suggestion() {
        assert_eq!(closest(&path(&["zzqx"]), &known_tree()), None);
    }

    #[test]
    fn the_secrets_are_known_keys() {
        let tree = known_tree();
        assert!(tree.get("secret").is_some() && tree.get("smtp_url").is_some());
    }

    #[test]
    fn test_variables_and_kubernetes_service_links_are_not_configuration() {
        for name in [
            "TEST_REDIS_URL",
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_GRPC",
            "PORT",
            "PORT_50051_TCP_ADDR",
        ] {
            assert!(!is_configuration(name), "{name}");
        }
        for name in [
            "LISTEN",
            "FLOW__MAX_ATTEMPTS",
            "SERVER__SHUTDOWN_GRACE_SECS",
        ] {
            assert!(is_configuration(name), "{name}");
        }
    }

    #[test]
    fn environment_names_use_the_double_underscore() {
        assert_eq!(
            env_name(&path(&["flow", "code_ttl_secs"])),
            "RECOVERY_FLOW__CODE_TTL_SECS"
        );
    }
}
