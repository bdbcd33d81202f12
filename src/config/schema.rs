//! The configuration's JSON Schema, made from the configuration types themselves (schemars): the
//! doc comments are the descriptions, the `Default` impls the defaults, the enums the allowed
//! words, and the `#[schemars(range(..))]` attributes the bounds. The strict loader checks every
//! number against those same bounds ([`out_of_range`]), and the configuration reference in
//! docs/configuration.md is rendered from this schema ([`reference_markdown`]), so the three
//! cannot disagree.
//!
//! `recovery-service config schema` prints it; docs/config.schema.json is the committed copy
//! (a test keeps it current), for editors: a TOML file that starts with
//! `#:schema ./config.schema.json` is completed and checked by taplo (Even Better TOML).

use std::fmt::Write as _;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::Config;

/// The command that rewrites every generated file of the repository (the schema, the
/// configuration reference, the OpenAPI document); the up-to-date checks print it.
pub const REGENERATE: &str = "bash scripts/regenerate.sh";

/// The schema, as `config schema` prints it. Draft-07: the newest draft taplo and most editors
/// validate with.
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Config>().to_value();
    close_objects(&mut schema);
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "$comment".into(),
            json!(format!(
                "Generated from the configuration types by `recovery-service config schema`; regenerate with `{REGENERATE}`."
            )),
        );
    }
    schema
}

/// `additionalProperties: false` on every table: an unknown key is an error for the loader
/// (`strict`), so it is one for the schema too.
fn close_objects(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for value in map.values_mut() {
                close_objects(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// `captcha`: the words `RECOVERY_CAPTCHA` takes, or a boolean (on/off).
pub(super) fn captcha_mode(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [
            {"type": "string", "enum": ["on", "image", "pow", "both", "off"]},
            {"type": "boolean"}
        ]
    })
}

/// `[captcha]`: the table, or the mode alone (`captcha = "off"`, as older files have it).
pub(super) fn captcha(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let table = generator.subschema_for::<super::CaptchaTable>();
    let mode = captcha_mode(generator);
    schemars::json_schema!({ "anyOf": [table, mode] })
}

/// A schema node with `$ref` (and a single-`allOf` wrapper) followed to its definition.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or_default();
            match root.pointer(&format!("/definitions/{name}")) {
                Some(target) => node = target,
                None => return node,
            }
        } else if let Some([only]) = node
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            node = only;
        } else {
            return node;
        }
    }
    node
}

/// The branches a value may match: the node itself, or each of its `anyOf`/`oneOf` branches
/// (an `Option` is `anyOf [T, null]`).
fn branches<'a>(root: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let node = resolve(root, node);
    match node
        .get("anyOf")
        .or_else(|| node.get("oneOf"))
        .and_then(Value::as_array)
    {
        Some(list) => list.iter().map(|branch| resolve(root, branch)).collect(),
        None => vec![node],
    }
}

fn number_text(value: &Value) -> String {
    value.to_string()
}

fn allowed(minimum: Option<&Value>, maximum: Option<&Value>) -> String {
    match (minimum, maximum) {
        (Some(low), Some(high)) => format!("{}..={}", number_text(low), number_text(high)),
        (Some(low), None) => format!("{}..", number_text(low)),
        (None, Some(high)) => format!("..={}", number_text(high)),
        (None, None) => String::new(),
    }
}

fn outside(value: &Value, minimum: Option<&Value>, maximum: Option<&Value>) -> bool {
    let as_f64 = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    // Compare as integers when both are (u64 bounds beyond f64's 53 bits stay exact).
    let below = minimum.is_some_and(|low| match (value.as_i64(), low.as_i64()) {
        (Some(v), Some(l)) => v < l,
        _ => match (value.as_u64(), low.as_u64()) {
            (Some(v), Some(l)) => v < l,
            _ => as_f64(value) < as_f64(low),
        },
    });
    let above = maximum.is_some_and(|high| match (value.as_u64(), high.as_u64()) {
        (Some(v), Some(h)) => v > h,
        _ => match (value.as_i64(), high.as_i64()) {
            (Some(v), Some(h)) => v > h,
            _ => as_f64(value) > as_f64(high),
        },
    });
    below || above
}

fn walk(root: &Value, node: &Value, value: &Value, key: &str, problems: &mut Vec<String>) {
    for branch in branches(root, node) {
        if let (Some(properties), Some(fields)) = (
            branch.get("properties").and_then(Value::as_object),
            value.as_object(),
        ) {
            for (name, property) in properties {
                if let Some(field) = fields.get(name) {
                    let path = if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{key}.{name}")
                    };
                    walk(root, property, field, &path, problems);
                }
            }
            return;
        }
        if let (Some(items), Some(elements)) = (branch.get("items"), value.as_array()) {
            for (index, element) in elements.iter().enumerate() {
                walk(root, items, element, &format!("{key}[{index}]"), problems);
            }
            return;
        }
        if value.is_number() {
            let (minimum, maximum) = (branch.get("minimum"), branch.get("maximum"));
            if minimum.is_none() && maximum.is_none() {
                continue;
            }
            if outside(value, minimum, maximum) {
                problems.push(format!(
                    "`{key}` is out of range: allowed {}",
                    allowed(minimum, maximum)
                ));
            }
            return;
        }
    }
}

/// One message per number outside the bounds the schema gives it, as
/// "`flow.max_attempts` is out of range: allowed 1..=20" (never the value).
pub(super) fn out_of_range(config: &Config) -> Vec<String> {
    let schema = json_schema();
    let Ok(value) = serde_json::to_value(config) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    walk(&schema, &schema, &value, "", &mut problems);
    problems
}

// ---------------------------------------------------------------------------------------------
// The reference in docs/configuration.md
// ---------------------------------------------------------------------------------------------

/// Where the generated reference sits in docs/configuration.md.
pub const REFERENCE_BEGIN: &str = "<!-- config-reference:begin";
pub const REFERENCE_END: &str = "<!-- config-reference:end -->";

/// One key of the reference: its dotted path and its (resolved) schema.
struct Key<'a> {
    path: String,
    schema: &'a Value,
    description: String,
    default: Option<&'a Value>,
}

fn description(root: &Value, property: &Value) -> String {
    let own = property.get("description").and_then(Value::as_str);
    let resolved = resolve(root, property)
        .get("description")
        .and_then(Value::as_str);
    own.or(resolved).unwrap_or_default().replace('\n', " ")
}

/// The schema's text for "what may be written here".
fn allowed_text(root: &Value, node: &Value) -> String {
    let node = resolve(root, node);
    if let Some(list) = node.get("anyOf").or_else(|| node.get("oneOf")) {
        let parts: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|branch| branch.get("type") != Some(&json!("null")))
            .map(|branch| allowed_text(root, branch))
            .collect();
        return parts.join(", or ");
    }
    if let Some(words) = node.get("enum").and_then(Value::as_array) {
        let words: Vec<String> = words.iter().map(|w| format!("`{}`", plain(w))).collect();
        return words.join(" | ");
    }
    if let Some(word) = node.get("const") {
        return format!("`{}`", plain(word));
    }
    let types: Vec<String> = match node.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let kind = types.first().map(String::as_str).unwrap_or("value");
    match kind {
        "integer" | "number" => {
            let range = allowed(node.get("minimum"), node.get("maximum")).replace("..=", " – ");
            format!("{kind} {range}").trim().to_owned()
        }
        "array" => match node.get("items") {
            Some(items) => format!("list of {}", allowed_text(root, items)),
            None => "list".to_owned(),
        },
        "string" => match node.get("format").and_then(Value::as_str) {
            Some(format) => format!("string ({format})"),
            None => "string".to_owned(),
        },
        "object" => match node.get("properties").and_then(Value::as_object) {
            Some(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, field)| format!("`{name}` {}", allowed_text(root, field)))
                    .collect();
                format!("table: {}", fields.join("; "))
            }
            None => "table".to_owned(),
        },
        other => other.to_owned(),
    }
}

/// A JSON value as TOML would show it.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn default_text(default: Option<&Value>) -> String {
    match default {
        None | Some(Value::Null) => "unset".to_owned(),
        Some(Value::String(text)) => format!("`\"{text}\"`"),
        Some(Value::Array(items)) if items.is_empty() => "`[]`".to_owned(),
        Some(Value::Object(map)) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("`{{ {} }}`", fields.join(", "))
        }
        Some(other) => format!("`{other}`"),
    }
}

/// Whether a property is a table of its own (a section) rather than a value: a table, or a
/// table that may also be written as one value (`captcha`).
fn is_table<'a>(root: &'a Value, property: &'a Value) -> Option<&'a Map<String, Value>> {
    branches(root, property)
        .into_iter()
        .find_map(|branch| branch.get("properties").and_then(Value::as_object))
}

fn collect<'a>(
    root: &'a Value,
    properties: &'a Map<String, Value>,
    defaults: Option<&'a Value>,
    prefix: &str,
    out: &mut Vec<Key<'a>>,
) {
    for (name, property) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let default = property
            .get("default")
            .or_else(|| defaults.and_then(|d| d.get(name)));
        out.push(Key {
            path,
            schema: property,
            description: description(root, property),
            default,
        });
    }
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn table(out: &mut String, root: &Value, keys: &[Key<'_>], env_prefix: &str) {
    out.push_str("| key | default | allowed | meaning |\n|---|---|---|---|\n");
    for key in keys {
        let name = key.path.rsplit('.').next().unwrap_or(&key.path);
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} |",
            escape_cell(&default_text(key.default)),
            escape_cell(&allowed_text(root, key.schema)),
            escape_cell(&key.description),
        );
    }
    let _ = writeln!(
        out,
        "\nFrom the environment: `{env_prefix}<KEY>` (upper case), e.g. `{env_prefix}{}`.\n",
        keys.first()
            .map(|k| k.path.rsplit('.').next().unwrap_or_default().to_uppercase())
            .unwrap_or_default()
    );
}

/// The configuration reference: one table per section, every key with its default, what it
/// allows and what it means; rendered from [`json_schema`] into docs/configuration.md.
pub fn reference_markdown() -> String {
    let root = json_schema();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{REFERENCE_BEGIN} — generated from the configuration types; regenerate with `{REGENERATE}` -->"
    );
    let Some(properties) = root.get("properties").and_then(Value::as_object) else {
        return out;
    };
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();

    let (scalars, sections): (Vec<_>, Vec<_>) = properties
        .iter()
        .partition(|(_, property)| is_table(&root, property).is_none());
    let scalars: Map<String, Value> = scalars
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut keys = Vec::new();
    collect(&root, &scalars, Some(&defaults), "", &mut keys);
    out.push_str("\n### Top level\n\n");
    table(&mut out, &root, &keys, "RECOVERY_");

    for (name, property) in sections {
        let Some(fields) = is_table(&root, property) else {
            continue;
        };
        let _ = writeln!(out, "### `[{name}]`\n");
        let about = description(&root, property);
        // The field's doc comment starts with the section's name, which the heading shows.
        let about = about
            .strip_prefix(&format!("`[{name}]`: "))
            .map(capitalized)
            .unwrap_or(about);
        if !about.is_empty() {
            let _ = writeln!(out, "{about}\n");
        }
        let mut keys = Vec::new();
        let section_defaults = defaults.get(name.as_str());
        let (values, tables): (Vec<_>, Vec<_>) = fields
            .iter()
            .partition(|(_, p)| is_table(&root, p).is_none() && !is_list_of_tables(&root, p));
        let values: Map<String, Value> = values
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        collect(&root, &values, section_defaults, name, &mut keys);
        // Tables inside a section (the rate limits' `{ limit, window_secs }`) are one row each.
        for (field, sub) in &tables {
            if is_list_of_tables(&root, sub) {
                continue;
            }
            keys.push(Key {
                path: format!("{name}.{field}"),
                schema: sub,
                description: description(&root, sub),
                default: section_defaults.and_then(|d| d.get(field.as_str())),
            });
        }
        keys.sort_by(|a, b| a.path.cmp(&b.path));
        table(
            &mut out,
            &root,
            &keys,
            &format!("RECOVERY_{}__", name.to_uppercase()),
        );
        for (field, sub) in tables {
            if !is_list_of_tables(&root, sub) {
                continue;
            }
            let Some(items) = resolve(&root, sub)
                .get("items")
                .and_then(|items| is_table(&root, items))
            else {
                continue;
            };
            let _ = writeln!(
                out,
                "#### `[[{name}.{field}]]`\n\n{}\n",
                description(&root, sub)
            );
            let item_schema = resolve(&root, &resolve(&root, sub)["items"]);
            let required: Vec<&str> = item_schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut keys = Vec::new();
            collect(&root, items, None, &format!("{name}.{field}"), &mut keys);
            out.push_str("| key | default | allowed | meaning |\n|---|---|---|---|\n");
            for key in &keys {
                let leaf = key.path.rsplit('.').next().unwrap_or_default();
                let default = if required.contains(&leaf) {
                    "required".to_owned()
                } else {
                    default_text(key.default)
                };
                let _ = writeln!(
                    out,
                    "| `{leaf}` | {} | {} | {} |",
                    escape_cell(&default),
                    escape_cell(&allowed_text(&root, key.schema)),
                    escape_cell(&key.description)
                );
            }
            out.push('\n');
        }
    }
    out.push_str(REFERENCE_END);
    out.push_str("\n\n");
    out
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn is_list_of_tables(root: &Value, property: &Value) -> bool {
    resolve(root, property)
        .get("items")
        .is_some_and(|items| is_table(root, items).is_some())
}

/// Every key (dotted path) whose schema lacks what the reference promises: a description, a
/// default (unless required), bounds for a number, and the words for a choice. Empty when the
/// schema is complete; a test keeps it so, so a key added without its doc comment or its
/// `range` fails the build's tests, not a reader.
pub fn incomplete_keys() -> Vec<String> {
    let root = json_schema();
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut missing = Vec::new();
    check_table(&root, &root, Some(&defaults), "", &mut missing);
    missing
}

fn check_table(
    root: &Value,
    node: &Value,
    defaults: Option<&Value>,
    prefix: &str,
    missing: &mut Vec<String>,
) {
    let node = resolve(root, node);
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if description(root, property).is_empty() {
            missing.push(format!("{path}: no description (a `///` doc comment)"));
        }
        let own_default = defaults.and_then(|d| d.get(name));
        let secret = matches!(name.as_str(), "secret" | "smtp_url");
        if property.get("default").is_none()
            && own_default.is_none()
            && !required.contains(&name.as_str())
            && !secret
        {
            missing.push(format!("{path}: no default"));
        }
        for branch in branches(root, property) {
            let is_number = matches!(
                branch.get("type").and_then(Value::as_str),
                Some("integer" | "number")
            );
            if is_number && (branch.get("minimum").is_none() || branch.get("maximum").is_none()) {
                missing.push(format!(
                    "{path}: no range (`#[schemars(range(min = …, max = …))]`)"
                ));
            }
        }
        if is_table(root, property).is_some() {
            check_table(root, property, own_default, &path, missing);
        } else if let Some(items) = resolve(root, property).get("items")
            && is_table(root, items).is_some()
        {
            check_table(root, items, None, &format!("{path}[]"), missing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_description_a_default_and_its_bounds() {
        let missing = incomplete_keys();
        assert!(
            missing.is_empty(),
            "the configuration schema is incomplete:\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn every_table_refuses_unknown_keys() {
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(
            schema["definitions"]["FlowConfig"]["additionalProperties"],
            json!(false)
        );
    }

    #[test]
    fn a_number_below_its_minimum_is_reported_with_its_range() {
        let mut config = Config::default();
        config.flow.max_attempts = 0;
        config.rate_limits.per_ip.window_secs = 0;
        assert_eq!(
            out_of_range(&config),
            [
                "`flow.max_attempts` is out of range: allowed 1..=20",
                "`rate_limits.per_ip.window_secs` is out of range: allowed 1..=604800",
            ]
        );
    }

    #[test]
    fn a_webhook_endpoint_is_checked_by_its_index() {
        let mut config = Config::default();
        config.webhooks.endpoints = vec![crate::notify::webhooks::WebhookEndpoint {
            name: None,
            url: "https://example.com/hook".into(),
            secret: Vec::new(),
            events: vec!["password.changed".into()],
            timeout_ms: 5,
        }];
        assert_eq!(
            out_of_range(&config),
            ["`webhooks.endpoints[0].timeout_ms` is out of range: allowed 100..=60000"]
        );
    }

    #[test]
    fn the_defaults_are_within_the_schema() {
        assert_eq!(out_of_range(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn the_reference_names_every_section_and_a_default() {
        let reference = reference_markdown();
        assert!(reference.contains("### `[flow]`"), "{reference}");
        assert!(
            reference.contains("| `max_attempts` | `5` | integer 1 – 20 |"),
            "{reference}"
        );
        assert!(reference.contains("#### `[[webhooks.endpoints]]`"));
    }
}
