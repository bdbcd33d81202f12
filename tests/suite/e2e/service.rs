//! The service around the flow: health, reflection (v1 and v1alpha), API-key authentication of
//! AccountService, graceful shutdown.

use std::time::Duration;

use crate::common::*;
use recovery_service::proto;
use recovery_service::server::Overrides;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(app: &TestApp) -> Channel {
    Channel::from_shared(app.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_reports_serving_overall_and_per_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(&app).await);
    for service in [
        "",
        "identity.recovery.v1.RecoveryService",
        "identity.recovery.v1.AccountService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tokio_stream::StreamExt;
    let app = spawn_app().await;

    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel(&app).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(response)) = stream.next().await else {
            panic!("no v1 answer")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("wrong v1 answer")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "identity.recovery.v1.RecoveryService",
            "identity.recovery.v1.AccountService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "v1 lacks {expected}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel(&app).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "identity.recovery.v1.RecoveryService".into(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(response)) = stream.next().await else {
            panic!("no v1alpha answer")
        };
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("wrong v1alpha answer")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn account_service_requires_a_configured_api_key() {
    use sha2::Digest;
    let key = "svc-key-for-tests-0123456789";
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let app = spawn_app_with(
        move |c| c.account_api.api_key_sha256 = vec![digest],
        Overrides::default(),
    )
    .await;
    let request = |bearer: Option<&str>| {
        let mut request = tonic::Request::new(proto::VerifyPasswordRequest {
            login_id: "someone@example.com".into(),
            password: "whatever".into(),
        });
        if let Some(bearer) = bearer {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        }
        request
    };
    app.accounts
        .clone()
        .verify_password(request(None))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    app.accounts
        .clone()
        .verify_password(request(Some("wrong-key")))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    let ok = app
        .accounts
        .clone()
        .verify_password(request(Some(key)))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.valid);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_call_finish() {
    // A hashing-heavy call (default OWASP cost) is in flight when shutdown begins.
    let app = spawn_app_with(
        |c| {
            c.hashing = recovery_service::accounts::HashSettings::default();
        },
        Overrides::default(),
    )
    .await;
    let mut client = app.accounts.clone();
    let call = tokio::spawn(async move {
        client
            .create_account(proto::CreateAccountRequest {
                login_id: unique_login(),
                email: String::new(),
                phone: String::new(),
                password: OLD_PASSWORD.into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.stop().await;
    let finished = call.await.unwrap();
    assert!(finished.is_ok(), "in-flight call was cut: {finished:?}");
}
