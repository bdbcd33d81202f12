//! Generates the gRPC code and a descriptor set (for reflection and Envoy's grpc_json_transcoder).

use std::path::PathBuf;

/// Messages that carry a secret (password, code, token, captcha answer, login): their derived
/// `Debug` would print it, so they get a redacting `Debug` by hand in `src/api/redact.rs`.
const SECRET_MESSAGES: &[&str] = &[
    ".identity.recovery.v1.StartRecoveryRequest",
    ".identity.recovery.v1.VerifyCodeRequest",
    ".identity.recovery.v1.VerifyCodeResponse",
    ".identity.recovery.v1.ResetPasswordRequest",
    ".identity.recovery.v1.ValidatePasswordRequest",
    ".identity.recovery.v1.CreateAccountRequest",
    ".identity.recovery.v1.VerifyPasswordRequest",
    ".identity.recovery.v1.ReportUnrequestedRecoveryRequest",
    ".identity.recovery.v1.AdminStartRecoveryRequest",
    ".identity.recovery.v1.AdminStartRecoveryResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("recovery.bin"))
        .skip_debug(SECRET_MESSAGES.iter().copied())
        .compile_with_config(
            config,
            &[
                PathBuf::from("proto/identity/recovery/v1/recovery.proto"),
                PathBuf::from("proto/identity/recovery/v1/account.proto"),
                // Not imported by our protos, but the error details we send are: Envoy's
                // transcoder (`convert_grpc_status`) can only print an `Any` whose type is in
                // the descriptor set; without these a JSON caller gets an empty error body.
                // The generated `google.rpc` module is not included (tonic-types has it).
                PathBuf::from("proto/google/rpc/status.proto"),
                PathBuf::from("proto/google/rpc/error_details.proto"),
            ],
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
