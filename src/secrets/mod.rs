//! Secret material and the primitives every layer may use: the server keys and their HMACs,
//! the OS random generator, password hashing (argon2) and masking of destinations for display.
//!
//! Neutral ground: this module imports no other module of the crate, so the domain (`recovery`,
//! `accounts`) and the adapters (`store`, `db`, `notify`) can all use it without an arrow
//! pointing back up.

pub mod hasher;
pub mod keys;
pub mod masking;

pub use hasher::{HashError, HashSettings, PasswordHasher};
pub use keys::{KeyRing, random_bytes, random_digits, random_token};
pub use masking::{mask_email, mask_phone};
