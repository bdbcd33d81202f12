//! The gRPC methods this server has, as `package.Service/Method`, read once from the descriptor
//! sets it serves (ours, health, reflection v1 and v1alpha). A request path is caller input:
//! whatever names a span or a metric label must come from this closed set, never from the path
//! itself (a scanner would mint one span name or series per path it tries).

use std::collections::HashSet;
use std::sync::OnceLock;

use prost::Message;

/// Span name for a path that is not one of our methods.
pub const UNKNOWN: &str = "grpc.unknown";

fn all() -> &'static HashSet<String> {
    static ROUTES: OnceLock<HashSet<String>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut routes = HashSet::new();
        for encoded in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            // Compiled into the binary; a set that does not decode would fail every test.
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                tracing::error!("a compiled-in descriptor set does not decode");
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        let method = method.name.unwrap_or_default();
                        routes.insert(if package.is_empty() {
                            format!("{service_name}/{method}")
                        } else {
                            format!("{package}.{service_name}/{method}")
                        });
                    }
                }
            }
        }
        routes
    })
}

/// `package.Service/Method` for the path of one of our methods (`/package.Service/Method`),
/// `None` for anything else.
pub fn known(path: &str) -> Option<&'static str> {
    let route = path.strip_prefix('/')?;
    all().get(route).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_methods_are_known_and_nothing_else_is() {
        assert_eq!(
            known("/identity.recovery.v1.RecoveryService/StartRecovery"),
            Some("identity.recovery.v1.RecoveryService/StartRecovery")
        );
        assert!(known("/identity.recovery.v1.AccountService/VerifyPassword").is_some());
        assert!(known("/grpc.health.v1.Health/Check").is_some());
        assert!(known("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_some());
        assert!(known("/identity.recovery.v1.RecoveryService/NoSuchMethod").is_none());
        assert!(known("/identity.recovery.v1.RecoveryService/StartRecovery/x").is_none());
        assert!(known("identity.recovery.v1.RecoveryService/StartRecovery").is_none());
        assert!(known("/").is_none());
    }
}
