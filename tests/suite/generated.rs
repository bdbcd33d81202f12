//! The generated files of the repository are what their sources make today: the configuration's
//! JSON Schema and its reference in docs/configuration.md (from the configuration types), and
//! the OpenAPI document of the JSON gateway (from `proto/` and its `google.api.http` rules).
//!
//! `UPDATE_GENERATED=1` rewrites them instead of comparing (what `bash scripts/regenerate.sh`
//! runs); a stale file fails with that command in the message.

use std::path::{Path, PathBuf};

use recovery_service::config::schema::{self, REFERENCE_BEGIN, REFERENCE_END, REGENERATE};

fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn regenerating() -> bool {
    std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1")
}

/// Compares `path` with `expected`, or writes it when regenerating.
#[track_caller]
fn assert_current(path: &str, expected: &str) {
    let file = repository(path);
    if regenerating() {
        std::fs::write(&file, expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    if committed != expected {
        let line = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(expected.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{path} is out of date (first difference at line {line}): regenerate it with `{REGENERATE}` and commit the result"
        );
    }
}

#[test]
fn the_committed_configuration_schema_is_what_the_types_make() {
    let text = serde_json::to_string_pretty(&schema::json_schema()).unwrap() + "\n";
    assert_current("docs/config.schema.json", &text);
}

#[test]
fn the_configuration_reference_in_the_docs_is_what_the_schema_makes() {
    let path = "docs/configuration.md";
    let committed = std::fs::read_to_string(repository(path)).unwrap();
    let (Some(begin), Some(end)) = (
        committed.find(REFERENCE_BEGIN),
        committed.find(REFERENCE_END),
    ) else {
        panic!("{path} has lost its `{REFERENCE_BEGIN}` / `{REFERENCE_END}` markers");
    };
    let expected = format!(
        "{}{}{}",
        &committed[..begin],
        schema::reference_markdown(),
        committed[end + REFERENCE_END.len()..].trim_start_matches('\n')
    );
    assert_current(path, &expected);
}

#[test]
fn the_committed_openapi_document_is_what_the_protos_make() {
    let document = recovery_service::api::openapi::document();
    // Top-level keys in the order readers expect (serde_json's map would sort them).
    let yaml: String = ["openapi", "info", "servers", "tags", "paths", "components"]
        .into_iter()
        .map(|key| {
            let one = serde_json::json!({ key: document[key] });
            serde_norway::to_string(&one).unwrap()
        })
        .collect();
    assert_eq!(
        document.as_object().unwrap().len(),
        6,
        "a top-level key of the OpenAPI document is not written out"
    );
    let header = format!(
        "# The OpenAPI document of the JSON gateway (Envoy's grpc_json_transcoder in front of\n\
         # recovery-service), generated from proto/ and its google.api.http rules by\n\
         # src/api/openapi.rs. Do not edit: regenerate with `{REGENERATE}`.\n"
    );
    assert_current("docs/openapi.yaml", &(header + &yaml));
}
