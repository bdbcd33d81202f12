//! The OpenAPI 3.1 document of the JSON gateway (docs/openapi.yaml), made from the descriptor set
//! the build already compiles for Envoy: every `RecoveryService` RPC's `google.api.http` rule
//! becomes an operation, every message a schema in proto3's JSON mapping as the shipped Envoy
//! prints it (proto field names, enums as names, 64-bit integers and bytes as strings,
//! timestamps as RFC 3339), the proto comments the descriptions. Errors are the
//! `google.rpc.Status` body Envoy's `convert_grpc_status` writes, with the `ErrorInfo` reasons
//! each HTTP status carries ([`REASONS`], checked against the one error mapping in its tests).
//!
//! A generator of our own rather than `protoc-gen-openapiv2`: that one writes OpenAPI 2 only,
//! and neither knows our error reasons. `AccountService` is left out: it is internal, and the
//! shipped Envoy refuses its paths.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, SourceCodeInfo, field_descriptor_proto};
use serde_json::{Map, Value, json};

use crate::proto::FILE_DESCRIPTOR_SET;

/// The services the gateway exposes (Envoy's `services:` list in deploy/envoy/envoy.yaml).
pub const PUBLIC_SERVICES: &[&str] = &["identity.recovery.v1.RecoveryService"];

/// Every `ErrorInfo` reason of `RecoveryService`, its gRPC code, the HTTP status Envoy answers it
/// with (`grpc_json_transcoder`'s mapping), and when it comes.
pub const REASONS: &[(&str, tonic::Code, u16, &str)] = &[
    (
        "INVALID_ARGUMENT",
        tonic::Code::InvalidArgument,
        400,
        "a malformed field (empty, too long, bad e-mail, NUL…); every violation is listed in `BadRequest`",
    ),
    (
        "CAPTCHA_INVALID",
        tonic::Code::InvalidArgument,
        400,
        "a wrong, expired or reused captcha (the first answer burns it)",
    ),
    (
        "CODE_INVALID",
        tonic::Code::InvalidArgument,
        400,
        "a wrong code; metadata `attempts_left`",
    ),
    (
        "PASSWORD_MISMATCH",
        tonic::Code::InvalidArgument,
        400,
        "the two new passwords differ",
    ),
    (
        "PASSWORD_POLICY",
        tonic::Code::InvalidArgument,
        400,
        "policy violations, each a `BadRequest` violation with its own reason (`PASSWORD_TOO_SHORT`, `PASSWORD_BREACHED`, …)",
    ),
    (
        "FLOW_STATE",
        tonic::Code::FailedPrecondition,
        400,
        "the call is not allowed in the flow's state (metadata `state`), e.g. verify before send",
    ),
    (
        "CODE_EXPIRED",
        tonic::Code::FailedPrecondition,
        400,
        "the code is older than its lifetime; a new one can be sent",
    ),
    (
        "ATTEMPTS_EXHAUSTED",
        tonic::Code::FailedPrecondition,
        400,
        "too many wrong codes: the flow is over, start again",
    ),
    (
        "TOKEN_INVALID",
        tonic::Code::Unauthenticated,
        401,
        "an unknown, expired or used reset token or report code",
    ),
    (
        "FLOW_NOT_FOUND",
        tonic::Code::NotFound,
        404,
        "an unknown or expired flow id",
    ),
    (
        "RESEND_TOO_SOON",
        tonic::Code::ResourceExhausted,
        429,
        "the resend cooldown; `RetryInfo` and metadata `retry_after_seconds` say when",
    ),
    (
        "RATE_LIMITED",
        tonic::Code::ResourceExhausted,
        429,
        "a per-login, per-IP, per-account or global limit (metadata `scope`); `RetryInfo` says when",
    ),
    (
        "INTERNAL",
        tonic::Code::Internal,
        500,
        "anything unexpected; no detail leaves the service",
    ),
    (
        "UNAVAILABLE",
        tonic::Code::Unavailable,
        503,
        "the database or Redis cannot be reached; retry (nothing was consumed)",
    ),
];

// The descriptor set, read with the `google.api.http` extension that prost-types drops.

#[derive(Clone, PartialEq, Message)]
struct FileSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, Message)]
struct File {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<DescriptorProto>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<EnumDescriptorProto>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<Service>,
    #[prost(message, optional, tag = "9")]
    source_code_info: Option<SourceCodeInfo>,
}

#[derive(Clone, PartialEq, Message)]
struct Service {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Method>,
}

#[derive(Clone, PartialEq, Message)]
struct Method {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    input_type: String,
    #[prost(string, tag = "3")]
    output_type: String,
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptions {
    /// `google.api.http` (google/api/annotations.proto).
    #[prost(message, optional, tag = "72295728")]
    http: Option<HttpRule>,
}

/// `google.api.HttpRule`, the parts a unary REST mapping uses.
#[derive(Clone, PartialEq, Message)]
struct HttpRule {
    #[prost(string, tag = "2")]
    get: String,
    #[prost(string, tag = "3")]
    put: String,
    #[prost(string, tag = "4")]
    post: String,
    #[prost(string, tag = "5")]
    delete: String,
    #[prost(string, tag = "6")]
    patch: String,
    #[prost(string, tag = "7")]
    body: String,
}

impl HttpRule {
    fn method_and_path(&self) -> Option<(&'static str, &str)> {
        [
            ("get", &self.get),
            ("put", &self.put),
            ("post", &self.post),
            ("delete", &self.delete),
            ("patch", &self.patch),
        ]
        .into_iter()
        .find(|(_, path)| !path.is_empty())
        .map(|(method, path)| (method, path.as_str()))
    }
}

/// Leading comments by the descriptor path they are attached to (`[4, 0]`: the first message).
fn comments(file: &File) -> BTreeMap<Vec<i32>, String> {
    file.source_code_info
        .iter()
        .flat_map(|info| &info.location)
        .filter_map(|location| {
            let text = location.leading_comments.as_deref()?.trim();
            (!text.is_empty()).then(|| {
                let joined: Vec<&str> = text.lines().map(str::trim).collect();
                (location.path.clone(), joined.join(" "))
            })
        })
        .collect()
}

/// The messages and enums of every file, by fully-qualified name (`.pkg.Name`), with the
/// comment of each and of its fields.
/// A message, its comment and its fields' comments.
type Described = (DescriptorProto, Option<String>, Vec<Option<String>>);

#[derive(Default)]
struct Types {
    messages: BTreeMap<String, Described>,
    enums: BTreeMap<String, (EnumDescriptorProto, Option<String>)>,
}

impl Types {
    fn collect(files: &[File]) -> Self {
        let mut types = Types::default();
        for file in files {
            let notes = comments(file);
            for (index, message) in file.message_type.iter().enumerate() {
                let path = vec![4, index as i32];
                types.add_message(&format!(".{}", file.package), message, &path, &notes);
            }
            for (index, item) in file.enum_type.iter().enumerate() {
                let name = format!(".{}.{}", file.package, item.name());
                let note = notes.get(&vec![5, index as i32]).cloned();
                types.enums.insert(name, (item.clone(), note));
            }
        }
        types
    }

    fn add_message(
        &mut self,
        scope: &str,
        message: &DescriptorProto,
        path: &[i32],
        notes: &BTreeMap<Vec<i32>, String>,
    ) {
        let name = format!("{scope}.{}", message.name());
        let field_notes = (0..message.field.len())
            .map(|i| {
                let mut at = path.to_vec();
                at.extend([2, i as i32]);
                notes.get(&at).cloned()
            })
            .collect();
        for (index, nested) in message.nested_type.iter().enumerate() {
            let mut at = path.to_vec();
            at.extend([3, index as i32]);
            self.add_message(&name, nested, &at, notes);
        }
        for (index, item) in message.enum_type.iter().enumerate() {
            let mut at = path.to_vec();
            at.extend([4, index as i32]);
            self.enums.insert(
                format!("{name}.{}", item.name()),
                (item.clone(), notes.get(&at).cloned()),
            );
        }
        self.messages.insert(
            name,
            (message.clone(), notes.get(path).cloned(), field_notes),
        );
    }
}

/// The schema name of a proto type: its name without the package (`.identity.recovery.v1.X` →
/// `X`, nested `A.B` → `A.B`).
fn schema_name(full: &str) -> String {
    full.trim_start_matches('.')
        .trim_start_matches("identity.recovery.v1.")
        .to_owned()
}

fn reference(full: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(full))})
}

/// A field's schema in proto3's JSON mapping.
fn field_schema(field: &prost_types::FieldDescriptorProto, note: Option<&String>) -> Value {
    use field_descriptor_proto::Type;
    let mut schema = match field.r#type() {
        Type::String => json!({"type": "string"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int32", "minimum": 0})
        }
        // proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose precision).
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Type::Enum | Type::Message | Type::Group => match field.type_name() {
            ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            ".google.protobuf.Duration" => {
                json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
            }
            other => reference(other),
        },
    };
    if field.label() == field_descriptor_proto::Label::Repeated {
        schema = json!({"type": "array", "items": schema});
    }
    // A `$ref` with a sibling description is allowed in 3.1: the description is the field's.
    if let (Some(note), Some(map)) = (note, schema.as_object_mut()) {
        map.insert("description".into(), json!(note));
    }
    schema
}

fn message_schema(
    message: &DescriptorProto,
    note: Option<&String>,
    field_notes: &[Option<String>],
    except: &[&str],
) -> Value {
    let mut properties = Map::new();
    for (field, field_note) in message.field.iter().zip(field_notes) {
        if except.contains(&field.name()) {
            continue;
        }
        properties.insert(
            field.name().to_owned(),
            field_schema(field, field_note.as_ref()),
        );
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if let Some(note) = note {
        schema["description"] = json!(note);
    }
    schema
}

/// Every message reachable from `roots`, so components list what the operations use.
fn reachable(types: &Types, roots: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut queue = roots;
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some((message, _, _)) = types.messages.get(&name) {
            for field in &message.field {
                let type_name = field.type_name();
                if !type_name.is_empty() && !type_name.starts_with(".google.protobuf.") {
                    queue.push(type_name.to_owned());
                }
            }
        }
        seen.push(name);
    }
    seen.sort();
    seen
}

/// `{flow_id}` and `{name=pattern}` variables of a path template, as OpenAPI's `{flow_id}`.
fn path_variables(template: &str) -> (String, Vec<String>) {
    let mut path = String::new();
    let mut variables = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let name = inner.split('=').next().unwrap_or(inner).to_owned();
        path.push_str(&format!("{{{name}}}"));
        variables.push(name);
        rest = &rest[open + close + 1..];
    }
    path.push_str(rest);
    (path, variables)
}

fn status_schemas() -> Map<String, Value> {
    let any = |name: &str, properties: Value, description: &str| {
        json!({
            "type": "object",
            "description": description,
            "required": ["@type"],
            "properties": merge(json!({"@type": {"type": "string", "const": format!("type.googleapis.com/google.rpc.{name}")}}), properties),
        })
    };
    let reasons: Vec<&str> = REASONS.iter().map(|r| r.0).collect();
    let mut schemas = Map::new();
    schemas.insert(
        "Status".into(),
        json!({
            "type": "object",
            "description": "A `google.rpc.Status`: the gRPC status code (a number), a message for developers, and typed details. There is always an `ErrorInfo` with a stable `reason`.",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "integer", "description": "The gRPC status code: 3 INVALID_ARGUMENT, 5 NOT_FOUND, 8 RESOURCE_EXHAUSTED, 9 FAILED_PRECONDITION, 13 INTERNAL, 14 UNAVAILABLE, 16 UNAUTHENTICATED."},
                "message": {"type": "string", "description": "English, for developers; show the `LocalizedMessage` to people."},
                "details": {"type": "array", "items": {"oneOf": [
                    {"$ref": "#/components/schemas/ErrorInfo"},
                    {"$ref": "#/components/schemas/BadRequest"},
                    {"$ref": "#/components/schemas/RetryInfo"},
                    {"$ref": "#/components/schemas/LocalizedMessage"}
                ]}}
            }
        }),
    );
    schemas.insert("ErrorInfo".into(), any("ErrorInfo", json!({
        "reason": {"type": "string", "enum": reasons, "description": "Stable, machine-readable: branch on this."},
        "domain": {"type": "string", "const": crate::api::status::DOMAIN},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}, "description": "e.g. `attempts_left`, `scope`, `retry_after_seconds`, `state`, `violations`."}
    }), "Why the call failed."));
    schemas.insert("BadRequest".into(), any("BadRequest", json!({
        "field_violations": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"},
            "description": {"type": "string"},
            "reason": {"type": "string", "description": "For `PASSWORD_POLICY`: the rule broken, e.g. `PASSWORD_TOO_SHORT`."},
            "localized_message": {"type": "object", "properties": {"locale": {"type": "string"}, "message": {"type": "string"}}}
        }}}
    }), "Every field that was wrong, at once."));
    schemas.insert("RetryInfo".into(), any("RetryInfo", json!({
        "retry_delay": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?s$", "description": "e.g. `42s`."}
    }), "When to try again (cooldowns, rate limits, UNAVAILABLE)."));
    schemas.insert(
        "LocalizedMessage".into(),
        any(
            "LocalizedMessage",
            json!({
                "locale": {"type": "string"},
                "message": {"type": "string"}
            }),
            "The message for the person, in the flow's language.",
        ),
    );
    schemas
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// The error responses, one per HTTP status, each listing its reasons.
fn error_responses() -> Map<String, Value> {
    let mut by_status: BTreeMap<u16, Vec<&(&str, tonic::Code, u16, &str)>> = BTreeMap::new();
    for reason in REASONS {
        by_status.entry(reason.2).or_default().push(reason);
    }
    let mut responses = Map::new();
    for (status, reasons) in by_status {
        let lines: Vec<String> = reasons
            .iter()
            .map(|(reason, code, _, when)| format!("- `{reason}` ({}): {when}", grpc_name(*code)))
            .collect();
        let names: Vec<&str> = reasons.iter().map(|r| r.0).collect();
        responses.insert(
            format!("Error{status}"),
            json!({
                "description": format!("A `google.rpc.Status`; `ErrorInfo.reason` is one of:\n{}", lines.join("\n")),
                "content": {"application/json": {"schema": {
                    "allOf": [{"$ref": "#/components/schemas/Status"}],
                    "x-error-reasons": names,
                }}}
            }),
        );
    }
    responses
}

fn grpc_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        _ => "OTHER",
    }
}

/// The document, as docs/openapi.yaml holds it (the test writes it as YAML).
pub fn document() -> Value {
    let set = FileSet::decode(FILE_DESCRIPTOR_SET).unwrap_or_default();
    let types = Types::collect(&set.file);
    let mut paths = Map::new();
    let mut roots = Vec::new();
    let mut bodies = Map::new();
    let mut tags = Vec::new();

    for file in &set.file {
        let notes = comments(file);
        for (service_index, service) in file.service.iter().enumerate() {
            let full = format!("{}.{}", file.package, service.name);
            if !PUBLIC_SERVICES.contains(&full.as_str()) {
                continue;
            }
            let mut tag = json!({"name": service.name});
            if let Some(note) = notes.get(&vec![6, service_index as i32]) {
                tag["description"] = json!(note);
            }
            tags.push(tag);
            for (method_index, method) in service.method.iter().enumerate() {
                let Some(rule) = method.options.as_ref().and_then(|o| o.http.as_ref()) else {
                    continue;
                };
                let Some((verb, template)) = rule.method_and_path() else {
                    continue;
                };
                let (path, variables) = path_variables(template);
                roots.push(method.input_type.clone());
                roots.push(method.output_type.clone());
                let mut operation = json!({
                    "operationId": format!("{}_{}", service.name, method.name),
                    "tags": [service.name],
                    "summary": method.name,
                    "x-grpc-method": format!("/{full}/{}", method.name),
                });
                if let Some(note) =
                    notes.get(&vec![6, service_index as i32, 2, method_index as i32])
                {
                    operation["description"] = json!(note);
                }
                let input = types.messages.get(&method.input_type);
                let parameters: Vec<Value> = variables
                    .iter()
                    .map(|name| {
                        let mut schema = json!({"type": "string"});
                        if let Some((message, _, field_notes)) = input
                            && let Some((field, note)) = message
                                .field
                                .iter()
                                .zip(field_notes)
                                .find(|(f, _)| f.name() == name)
                        {
                            schema = field_schema(field, note.as_ref());
                        }
                        let description = schema.get("description").cloned();
                        let mut parameter =
                            json!({"name": name, "in": "path", "required": true, "schema": schema});
                        if let Some(description) = description {
                            parameter["description"] = description;
                        }
                        parameter
                    })
                    .collect();
                if !parameters.is_empty() {
                    operation["parameters"] = json!(parameters);
                }
                if rule.body == "*" {
                    let schema = if variables.is_empty() {
                        reference(&method.input_type)
                    } else if let Some((message, note, field_notes)) = input {
                        // The path carries some fields; the body the rest.
                        let except: Vec<&str> = variables.iter().map(String::as_str).collect();
                        let name = format!("{}Body", method.name);
                        bodies.insert(
                            name.clone(),
                            message_schema(message, note.as_ref(), field_notes, &except),
                        );
                        json!({"$ref": format!("#/components/schemas/{name}")})
                    } else {
                        json!({"type": "object"})
                    };
                    operation["requestBody"] = json!({
                        "required": true,
                        "content": {"application/json": {"schema": schema}}
                    });
                }
                let mut responses = Map::new();
                responses.insert(
                    "200".into(),
                    json!({
                        "description": "OK",
                        "content": {"application/json": {"schema": reference(&method.output_type)}}
                    }),
                );
                for status in error_responses().keys() {
                    let code = status.trim_start_matches("Error");
                    responses.insert(
                        code.to_owned(),
                        json!({"$ref": format!("#/components/responses/{status}")}),
                    );
                }
                operation["responses"] = Value::Object(responses);
                let entry = paths
                    .entry(path)
                    .or_insert_with(|| Value::Object(Map::new()));
                entry[verb] = operation;
            }
        }
    }

    let mut schemas = Map::new();
    for name in reachable(&types, roots) {
        if let Some((message, note, field_notes)) = types.messages.get(&name) {
            schemas.insert(
                schema_name(&name),
                message_schema(message, note.as_ref(), field_notes, &[]),
            );
        } else if let Some((item, note)) = types.enums.get(&name) {
            let values: Vec<&str> = item.value.iter().map(|v| v.name()).collect();
            let mut schema = json!({"type": "string", "enum": values});
            if let Some(note) = note {
                schema["description"] = json!(note);
            }
            schemas.insert(schema_name(&name), schema);
        }
    }
    schemas.extend(bodies);
    schemas.extend(status_schemas());

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "recovery-service JSON gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Password recovery over JSON/HTTP, as the shipped Envoy (deploy/envoy/envoy.yaml) transcodes it to gRPC. Field names are the proto names; enums are their names; timestamps RFC 3339; bytes base64; fields at their default are still printed. Every error is a `google.rpc.Status` with an `ErrorInfo` reason (docs/api.md). Generated from proto/ by the project's own generator; regenerate with `bash scripts/regenerate.sh`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{"url": "http://localhost:8080", "description": "Envoy from deploy/compose.yaml"}],
        "tags": tags,
        "paths": paths,
        "components": {"schemas": schemas, "responses": error_responses()}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::RecoveryError;

    #[test]
    fn every_reason_in_the_document_is_the_one_the_error_mapping_sends() {
        use std::time::Duration;
        let examples = [
            RecoveryError::CaptchaInvalid,
            RecoveryError::FlowNotFound,
            RecoveryError::FlowState { state: "CODE_SENT" },
            RecoveryError::CodeInvalid { attempts_left: 1 },
            RecoveryError::CodeExpired,
            RecoveryError::AttemptsExhausted,
            RecoveryError::ResendTooSoon {
                retry_after: Duration::from_secs(1),
            },
            RecoveryError::RateLimited {
                retry_after: Duration::from_secs(1),
                scope: "ip",
            },
            RecoveryError::TokenInvalid,
            RecoveryError::ReportCodeInvalid,
            RecoveryError::PasswordMismatch,
            RecoveryError::PasswordPolicy(Vec::new()),
            RecoveryError::InvalidArgument(Vec::new()),
            RecoveryError::Unavailable(anyhow::anyhow!("down")),
            RecoveryError::Internal(anyhow::anyhow!("bug")),
        ];
        for error in examples {
            let status = crate::api::status::to_status(error);
            let details = tonic_types::StatusExt::get_error_details(&status);
            let reason = details.error_info().map(|i| i.reason.clone()).unwrap();
            let documented = REASONS.iter().find(|r| r.0 == reason);
            assert!(documented.is_some(), "{reason} is not in REASONS");
            assert_eq!(documented.unwrap().1, status.code(), "{reason}");
        }
    }

    #[test]
    fn every_public_rpc_has_an_operation() {
        let document = document();
        let operations: Vec<String> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap().to_owned())
            .collect();
        for rpc in [
            "CreateCaptcha",
            "StartRecovery",
            "GetRecoveryFlow",
            "SendVerificationCode",
            "VerifyCode",
            "ResetPassword",
            "ValidatePassword",
            "CancelRecovery",
            "ReportUnrequestedRecovery",
        ] {
            assert!(
                operations.contains(&format!("RecoveryService_{rpc}")),
                "{rpc}: {operations:?}"
            );
        }
    }
}
