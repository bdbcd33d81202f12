//! Generated wire types (`identity.recovery.v1`) and the encoded descriptor set.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("identity.recovery.v1");

/// Descriptor set of every served proto, for server reflection and Envoy's transcoder.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("recovery");
