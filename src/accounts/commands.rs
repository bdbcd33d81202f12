//! The account requests, parsed once (by the gRPC adapter and by the CLI alike), every
//! violation reported at once.

use secrecy::{ExposeSecret, SecretString};

use crate::recovery::RecoveryError;
use crate::recovery::error::Violations;
use crate::recovery::input::{self, LoginId};

pub struct CreateAccount {
    pub login: LoginId,
    /// `None`: the login is the address.
    pub email: Option<LoginId>,
    pub phone: Option<String>,
    pub password: SecretString,
}

impl CreateAccount {
    pub fn parse(
        login_id: &str,
        email: &str,
        phone: &str,
        password: &SecretString,
    ) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", login_id));
        let email = violations.check(input::parse_optional_email("email", email));
        let phone = violations.check(input::parse_optional_phone("phone", phone));
        let password =
            violations.check(input::parse_password("password", password.expose_secret()));
        // Each field is `None` exactly when its violation was recorded.
        let (Some(login), Some(email), Some(phone), Some(password)) =
            (login, email, phone, password)
        else {
            return Err(violations.into_error());
        };
        Ok(Self {
            login,
            email,
            phone,
            password,
        })
    }
}

pub struct VerifyPassword {
    pub login: LoginId,
    pub password: SecretString,
}

impl VerifyPassword {
    pub fn parse(login_id: &str, password: &str) -> Result<Self, RecoveryError> {
        let mut violations = Violations::new();
        let login = violations.check(LoginId::parse("login_id", login_id));
        let password = violations.check(input::parse_password("password", password));
        // Each field is `None` exactly when its violation was recorded.
        let (Some(login), Some(password)) = (login, password) else {
            return Err(violations.into_error());
        };
        Ok(Self { login, password })
    }
}

/// `AccountService.DeleteAccount`: the account to erase.
pub struct DeleteAccount {
    pub account_id: String,
}

impl DeleteAccount {
    pub fn parse(account_id: &str) -> Result<Self, RecoveryError> {
        let account_id = input::parse_id("account_id", account_id)
            .map_err(|v| RecoveryError::InvalidArgument(vec![v]))?;
        Ok(Self { account_id })
    }
}

/// `AccountService.ExportAccountData`: the account whose data is asked for.
pub struct ExportAccountData {
    pub account_id: String,
}

impl ExportAccountData {
    pub fn parse(account_id: &str) -> Result<Self, RecoveryError> {
        let account_id = input::parse_id("account_id", account_id)
            .map_err(|v| RecoveryError::InvalidArgument(vec![v]))?;
        Ok(Self { account_id })
    }
}
