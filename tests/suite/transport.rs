//! Transport security: TLS and mutual TLS on the gRPC port (rustls, certificates made here with
//! rcgen), client certificates or API keys for AccountService, and the gateway key of
//! RecoveryService.

use std::path::PathBuf;

use crate::common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use recovery_service::config::{Config, TlsConfig};
use recovery_service::proto;
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;
use recovery_service::server::{App, Overrides};
use sha2::Digest;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A PEM certificate and its private key.
struct Pem {
    cert: String,
    key: String,
}

/// A certificate authority for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Pem {
        self.leaf(
            "recovery-service",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str) -> Pem {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate with these SANs: `uri:...` is a URI SAN, anything else a DNS SAN.
    fn client_with_sans(&self, name: &str, sans: &[&str]) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.strip_prefix("uri:") {
                Some(uri) => SanType::URI(uri.try_into().unwrap()),
                None => SanType::DnsName((*san).try_into().unwrap()),
            })
            .collect();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The server's side of a test PKI: a CA, the server certificate it signed, and the files the
/// configuration points at.
struct Pki {
    ca: Ca,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: Ca::new("recovery test CA"),
            dir: TempDir::new(),
        }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// TLS with the CA's server certificate; `mutual`: `Some(optional)` also verifies client
    /// certificates against the same CA.
    fn tls_config(&self, mutual: Option<bool>) -> TlsConfig {
        let server = self.ca.server();
        TlsConfig {
            cert_file: Some(self.write("server.crt", &server.cert)),
            key_file: Some(self.write("server.key", &server.key)),
            client_ca_file: mutual.map(|_| self.write("clients-ca.crt", &self.ca.cert_pem())),
            client_auth_optional: mutual.unwrap_or(false),
            ..TlsConfig::default()
        }
    }
}

/// The real server on port 0, configured by `configure`; unlike `spawn_app` it does not
/// connect a plaintext client, which a TLS port would refuse.
struct Served {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

impl Served {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new();
        let mut config = test_config(&dir);
        config.database_url = fresh_database_url(&dir).await;
        configure(&mut config);
        let app = App::build(config, Overrides::default())
            .await
            .expect("app builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            port,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn tls_channel(
        &self,
        ca: &str,
        client: Option<&Pem>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.port))?
            .tls_config(tls)?
            .connect()
            .await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

fn verify_request(api_key: Option<&str>) -> tonic::Request<proto::VerifyPasswordRequest> {
    let mut request = tonic::Request::new(proto::VerifyPasswordRequest {
        login_id: "someone@example.com".into(),
        password: "whatever".into(),
    });
    if let Some(key) = api_key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

async fn health_of(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
}

fn sha256_hex(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

#[tokio::test]
async fn a_tls_port_serves_grpc_to_a_client_that_trusts_its_ca() {
    let pki = Pki::new();
    let tls = pki.tls_config(None);
    let served = Served::start(move |c| c.tls = tls).await;
    let channel = served
        .tls_channel(&pki.ca.cert_pem(), None)
        .await
        .expect("TLS connection");
    assert_eq!(
        health_of(channel.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    let captcha = RecoveryServiceClient::new(channel)
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .expect("RecoveryService over TLS")
        .into_inner();
    assert!(!captcha.captcha_id.is_empty());
    served.stop().await;
}

#[tokio::test]
async fn plaintext_to_a_tls_port_fails() {
    let pki = Pki::new();
    let tls = pki.tls_config(None);
    let served = Served::start(move |c| c.tls = tls).await;
    let plaintext = async {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", served.port))?
            .connect()
            .await?;
        Ok::<_, anyhow::Error>(health_of(channel, "").await?)
    }
    .await;
    assert!(
        plaintext.is_err(),
        "a plaintext call to a TLS port got an answer: {plaintext:?}"
    );
    // The refused connection did not hurt the server.
    let channel = served.tls_channel(&pki.ca.cert_pem(), None).await.unwrap();
    assert_eq!(
        health_of(channel, "").await.unwrap(),
        ServingStatus::Serving
    );
    served.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_not_trusted_by_the_client() {
    let pki = Pki::new();
    let tls = pki.tls_config(None);
    let served = Served::start(move |c| c.tls = tls).await;
    let stranger = Ca::new("some other CA");
    let outcome = async {
        let channel = served.tls_channel(&stranger.cert_pem(), None).await?;
        Ok::<_, anyhow::Error>(health_of(channel, "").await?)
    }
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
    served.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_the_trusted_ca_opens_account_service_without_an_api_key() {
    let pki = Pki::new();
    let tls = pki.tls_config(Some(false));
    let served = Served::start(move |c| {
        c.tls = tls;
        // A key exists, but this caller does not use it: the certificate alone is enough.
        c.account_api.api_key_sha256 = vec![sha256_hex("unused-account-key-0123456789")];
    })
    .await;
    let client = pki.ca.client("billing-service");
    let channel = served
        .tls_channel(&pki.ca.cert_pem(), Some(&client))
        .await
        .expect("mTLS connection");
    let answer = AccountServiceClient::new(channel.clone())
        .verify_password(verify_request(None))
        .await
        .expect("AccountService accepts a verified client certificate")
        .into_inner();
    assert!(!answer.valid);
    // Required mutual TLS: a client without a certificate does not get a single answer.
    let without = async {
        let channel = served.tls_channel(&pki.ca.cert_pem(), None).await?;
        Ok::<_, anyhow::Error>(health_of(channel, "").await?)
    }
    .await;
    assert!(
        without.is_err(),
        "a client without certificate was served: {without:?}"
    );
    served.stop().await;
}

const HELPDESK: &str = "spiffe://cluster.local/ns/id/sa/helpdesk";

/// A server whose AccountService admits the helpdesk's SPIFFE id and `admin.internal`.
async fn served_with_an_allow_list(pki: &Pki, api_keys: Vec<String>) -> Served {
    let tls = pki.tls_config(Some(false));
    Served::start(move |c| {
        c.tls = tls;
        c.account_api.api_key_sha256 = api_keys;
        c.account_api.allowed_client_identities =
            vec![HELPDESK.to_owned(), "dns:admin.internal".to_owned()];
    })
    .await
}

#[tokio::test]
async fn a_client_certificate_with_a_listed_san_opens_account_service() {
    let pki = Pki::new();
    let served = served_with_an_allow_list(&pki, Vec::new()).await;
    for client in [
        pki.ca
            .client_with_sans("helpdesk", &[&format!("uri:{HELPDESK}")]),
        // DNS names compare case-insensitively; one listed SAN among others is enough.
        pki.ca
            .client_with_sans("admin", &["other.internal", "Admin.Internal"]),
    ] {
        let channel = served
            .tls_channel(&pki.ca.cert_pem(), Some(&client))
            .await
            .expect("mTLS connection");
        let answer = AccountServiceClient::new(channel)
            .verify_password(verify_request(None))
            .await
            .expect("a listed identity is admitted")
            .into_inner();
        assert!(!answer.valid);
    }
    served.stop().await;
}

#[tokio::test]
async fn a_client_certificate_whose_sans_are_not_listed_is_denied() {
    let pki = Pki::new();
    let api_key = "helpdesk-fallback-key-0123456789";
    let served = served_with_an_allow_list(&pki, vec![sha256_hex(api_key)]).await;
    for client in [
        // Same CA, another workload.
        pki.ca.client_with_sans(
            "billing",
            &[
                "uri:spiffe://cluster.local/ns/id/sa/billing",
                "billing.internal",
            ],
        ),
        // A prefix of a listed id is not that id.
        pki.ca
            .client_with_sans("helpdesk", &[&format!("uri:{HELPDESK}-2")]),
        // The subject's CN is not a SAN and is never matched.
        pki.ca.client("admin.internal"),
    ] {
        let channel = served
            .tls_channel(&pki.ca.cert_pem(), Some(&client))
            .await
            .expect("the handshake succeeds: the CA signed it");
        AccountServiceClient::new(channel.clone())
            .verify_password(verify_request(None))
            .await
            .failure()
            .assert(Code::PermissionDenied, "PERMISSION_DENIED");
        // The certificate is not listed, but the caller also holds an API key: that is its own
        // credential and still works.
        AccountServiceClient::new(channel)
            .verify_password(verify_request(Some(api_key)))
            .await
            .expect("a valid API key is enough");
    }
    served.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected_in_the_handshake() {
    let pki = Pki::new();
    let tls = pki.tls_config(Some(true));
    let served = Served::start(move |c| c.tls = tls).await;
    let stranger = Ca::new("some other CA").client("impostor");
    let outcome = async {
        let channel = served
            .tls_channel(&pki.ca.cert_pem(), Some(&stranger))
            .await?;
        Ok::<_, anyhow::Error>(health_of(channel, "").await?)
    }
    .await;
    // Even with optional client authentication a certificate that is presented must verify:
    // the connection dies before any RPC, so it cannot even reach the open health service.
    let error = outcome.expect_err("a certificate from another CA was accepted");
    let status = error.downcast_ref::<tonic::Status>();
    assert!(
        status.is_none_or(|s| s.code() != Code::PermissionDenied && s.code() != Code::Ok),
        "rejected by the service instead of the handshake: {error:?}"
    );
    served.stop().await;
}

#[tokio::test]
async fn with_optional_client_certificates_a_caller_without_one_still_needs_an_api_key() {
    let pki = Pki::new();
    let tls = pki.tls_config(Some(true));
    let key = "account-key-for-tests-0123456789";
    let digest = sha256_hex(key);
    let served = Served::start(move |c| {
        c.tls = tls;
        c.account_api.api_key_sha256 = vec![digest];
    })
    .await;
    let anonymous = served.tls_channel(&pki.ca.cert_pem(), None).await.unwrap();
    // Loopback is no proof of anything once an authentication method is configured.
    let denied = AccountServiceClient::new(anonymous.clone())
        .verify_password(verify_request(None))
        .await
        .failure();
    denied.assert(Code::PermissionDenied, "PERMISSION_DENIED");
    AccountServiceClient::new(anonymous.clone())
        .verify_password(verify_request(Some("wrong-key")))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    AccountServiceClient::new(anonymous.clone())
        .verify_password(verify_request(Some(key)))
        .await
        .expect("an API key works without a certificate");
    // RecoveryService faces people through gateways: no client certificate needed.
    RecoveryServiceClient::new(anonymous)
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .expect("RecoveryService without a client certificate");
    let client = pki.ca.client("support-tool");
    let with_cert = served
        .tls_channel(&pki.ca.cert_pem(), Some(&client))
        .await
        .unwrap();
    AccountServiceClient::new(with_cert)
        .verify_password(verify_request(None))
        .await
        .expect("a certificate works without an API key");
    served.stop().await;
}

#[tokio::test]
async fn recovery_service_requires_the_gateway_key_when_one_is_configured() {
    let key = "gateway-key-for-tests-0123456789";
    let digest = sha256_hex(key);
    let app = spawn_app_with(
        move |c| c.recovery_api.gateway_key_sha256 = vec![digest],
        Overrides::default(),
    )
    .await;
    let call = |header: Option<(&'static str, String)>| {
        let mut client = app.recovery.clone();
        async move {
            let mut request = tonic::Request::new(proto::CreateCaptchaRequest {});
            if let Some((name, value)) = header {
                request.metadata_mut().insert(name, value.parse().unwrap());
            }
            client.create_captcha(request).await
        }
    };
    call(None)
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    call(Some(("x-gateway-key", "not-the-key".into())))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    call(Some(("authorization", "Bearer not-the-key".into())))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    call(Some(("x-gateway-key", key.into())))
        .await
        .expect("the gateway key in x-gateway-key");
    call(Some(("authorization", format!("Bearer {key}"))))
        .await
        .expect("the gateway key as a bearer token");

    // Health checks and reflection stay open: load balancers and grpcurl carry no key.
    let channel = Channel::from_shared(app.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for service in ["", "identity.recovery.v1.RecoveryService"] {
        assert_eq!(
            health_of(channel.clone(), service).await.unwrap(),
            ServingStatus::Serving
        );
    }
    {
        use tokio_stream::StreamExt;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection without a gateway key")
            .into_inner();
        assert!(matches!(stream.next().await, Some(Ok(_))));
    }
    app.stop().await;
}

#[test]
fn the_dependency_tree_has_one_crypto_provider_ring() {
    // Two rustls providers in one process make rustls refuse to pick a default at run time;
    // rcgen, redis, sqlx and tonic are all built with ring features for that reason.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"ring\""));
    assert!(
        !lock.contains("name = \"aws-lc-rs\"") && !lock.contains("name = \"aws-lc-sys\""),
        "aws-lc-rs entered Cargo.lock: find it with `cargo tree -i aws-lc-rs`"
    );
}
