//! Credentials: personal access token, or GitHub App JWT → installation access token (cached).

use std::fmt;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Auth;
use crate::error::{Error, Result};

/// JWT `iat` is backdated by this much to tolerate clock drift (GitHub's recommendation).
pub const JWT_BACKDATE_SECS: i64 = 60;
/// JWT lifetime from now (GitHub allows at most 10 minutes).
pub const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// A cached installation token is refreshed when it has less than this left.
pub const INSTALLATION_TOKEN_REFRESH_MARGIN_SECS: i64 = 5 * 60;

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

/// A cached installation access token.
pub(crate) struct CachedToken {
    pub(crate) token: SecretString,
    pub(crate) expires_at: OffsetDateTime,
}

/// Runtime credential state.
pub(crate) enum AuthState {
    Token(SecretString),
    App(AppAuth),
}

pub(crate) struct AppAuth {
    pub(crate) app_id: String,
    pub(crate) installation_id: u64,
    key: EncodingKey,
    pub(crate) cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token([REDACTED])"),
            Self::App(app) => f
                .debug_struct("App")
                .field("app_id", &app.app_id)
                .field("installation_id", &app.installation_id)
                .field("private_key", &"[REDACTED]")
                .finish(),
        }
    }
}

impl AuthState {
    pub(crate) fn from_config(auth: &Auth) -> Result<Self> {
        match auth {
            Auth::Token(t) => {
                if t.expose_secret().trim().is_empty() {
                    return Err(Error::Config("GITHUB_TOKEN is empty".to_owned()));
                }
                Ok(Self::Token(t.clone()))
            }
            Auth::App {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                if app_id.trim().is_empty() {
                    return Err(Error::Config("GITHUB_APP_ID is empty".to_owned()));
                }
                // Never include the key or the parser's error detail in the message.
                let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
                    .map_err(|_| {
                        Error::Auth(format!(
                            "the private key of GitHub App {app_id:?} is not a valid RSA PEM key"
                        ))
                    })?;
                Ok(Self::App(AppAuth {
                    app_id: app_id.clone(),
                    installation_id: *installation_id,
                    key,
                    cached: tokio::sync::Mutex::new(None),
                }))
            }
        }
    }
}

impl AppAuth {
    /// A fresh RS256 App JWT: `iat` = now − 60 s, `exp` = now + 9 min, `iss` = app id / client id.
    pub(crate) fn jwt(&self, now: OffsetDateTime) -> Result<SecretString> {
        let now = now.unix_timestamp();
        let claims = Claims {
            iat: now - JWT_BACKDATE_SECS,
            exp: now + JWT_LIFETIME_SECS,
            iss: &self.app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            .map_err(|_| {
                Error::Auth(format!(
                    "could not sign the JWT of GitHub App {:?}",
                    self.app_id
                ))
            })
    }
}

impl CachedToken {
    pub(crate) fn is_fresh(&self, now: OffsetDateTime) -> bool {
        (self.expires_at - now).whole_seconds() > INSTALLATION_TOKEN_REFRESH_MARGIN_SECS
    }
}
