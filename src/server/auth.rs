//! Caller authentication for the internal `AccountService`: a bearer API key whose SHA-256 is
//! listed in the configuration, or, with no keys configured, loopback callers only.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::api::status::to_status;
use crate::config::AccountApiConfig;
use crate::recovery::RecoveryError;

#[derive(Clone, Debug)]
pub struct AccountAuth {
    key_hashes: Vec<[u8; 32]>,
}

impl AccountAuth {
    pub fn from_config(config: &AccountApiConfig) -> anyhow::Result<Self> {
        let mut key_hashes = Vec::new();
        for (index, hex_hash) in config.api_key_sha256.iter().enumerate() {
            let bytes = hex::decode(hex_hash.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("account_api.api_key_sha256[{index}] is not a SHA-256 in hex")
                })?;
            key_hashes.push(bytes);
        }
        Ok(Self { key_hashes })
    }

    pub fn is_loopback_only(&self) -> bool {
        self.key_hashes.is_empty()
    }
}

impl Interceptor for AccountAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.key_hashes.is_empty() {
            let loopback = request
                .remote_addr()
                .is_some_and(|addr| addr.ip().is_loopback());
            return if loopback {
                Ok(request)
            } else {
                Err(to_status(RecoveryError::PermissionDenied))
            };
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|key| Sha256::digest(key.trim().as_bytes()));
        let Some(presented) = presented else {
            return Err(to_status(RecoveryError::PermissionDenied));
        };
        let mut matched = subtle::Choice::from(0);
        for known in &self.key_hashes {
            matched |= known.as_slice().ct_eq(presented.as_slice());
        }
        if bool::from(matched) {
            Ok(request)
        } else {
            Err(to_status(RecoveryError::PermissionDenied))
        }
    }
}
