//! Client configuration: API base URL, scope (repository or organisation) and credential.

use std::fmt;

use secrecy::SecretString;
use url::Url;

use crate::error::{Error, Result};

/// Default REST API base URL (github.com).
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Default `REPO_OWNER` (seed compatibility).
pub const DEFAULT_REPO_OWNER: &str = "NREL";
/// Default `REPO_NAME` (seed compatibility).
pub const DEFAULT_REPO_NAME: &str = "EnergyPlus";

/// Where runners are registered and jobs are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One repository: `/repos/{owner}/{name}/…` endpoints.
    Repo {
        /// Owner (user or organisation) login.
        owner: String,
        /// Repository name.
        name: String,
    },
    /// An organisation: `/orgs/{org}/…` runner endpoints.
    Org {
        /// Organisation login.
        org: String,
    },
}

impl Scope {
    /// A repository scope.
    pub fn repo(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Repo {
            owner: owner.into(),
            name: name.into(),
        }
    }

    /// An organisation scope.
    pub fn org(org: impl Into<String>) -> Self {
        Self::Org { org: org.into() }
    }

    /// The web URL a runner is configured with (`config.sh --url`): `WEB/OWNER/REPO` or `WEB/ORG`, where
    /// `web_base` is e.g. `https://github.com` (see [`GitHubConfig::web_base`]).
    pub fn html_url(&self, web_base: &Url) -> Url {
        let mut url = web_base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            match self {
                Self::Repo { owner, name } => {
                    segs.push(owner).push(name);
                }
                Self::Org { org } => {
                    segs.push(org);
                }
            }
        }
        url
    }

    /// `owner/name` for a repository scope, the org login for an organisation scope.
    pub fn display_name(&self) -> String {
        match self {
            Self::Repo { owner, name } => format!("{owner}/{name}"),
            Self::Org { org } => org.clone(),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Self::Repo { owner, name } => {
                validate_name("REPO_OWNER", owner)?;
                validate_name("REPO_NAME", name)
            }
            Self::Org { org } => validate_name("GITHUB_ORG", org),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repo { owner, name } => write!(f, "repository {owner}/{name}"),
            Self::Org { org } => write!(f, "organisation {org}"),
        }
    }
}

/// The credential. `Debug` never shows secret material.
#[derive(Clone)]
pub enum Auth {
    /// A fine-grained or classic personal access token, sent as `Authorization: Bearer …`.
    Token(SecretString),
    /// A GitHub App installation: JWT signed with the App's key → installation access token.
    App {
        /// App ID or client ID (the JWT `iss`).
        app_id: String,
        /// Installation id of the App on the org/repository.
        installation_id: u64,
        /// The App's RSA private key, PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
        private_key_pem: SecretString,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.debug_tuple("Token").field(&"[REDACTED]").finish(),
            Self::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key_pem", &"[REDACTED]")
                .finish(),
        }
    }
}

/// Everything [`crate::GitHubClient::new`] needs.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// REST API base: `https://api.github.com`, `https://HOST/api/v3` (GHES), or a test server.
    pub api_url: Url,
    /// Repository or organisation.
    pub scope: Scope,
    /// Credential.
    pub auth: Auth,
    /// `User-Agent` header (GitHub rejects requests without one).
    pub user_agent: String,
}

/// Default `User-Agent`.
pub fn default_user_agent() -> String {
    format!("proxmox-gha-runners/{}", env!("CARGO_PKG_VERSION"))
}

impl GitHubConfig {
    /// A config with the default API URL and user agent.
    pub fn new(scope: Scope, auth: Auth) -> Self {
        Self {
            api_url: default_api_url(),
            scope,
            auth,
            user_agent: default_user_agent(),
        }
    }

    /// Builds the config from environment-style variables (pass `|k| std::env::var(k).ok()`):
    ///
    /// - `GITHUB_API_URL` (default `https://api.github.com`); clear-text `http://` only to a loopback host
    ///   (`127.0.0.0/8`, `::1`, `localhost`), or anywhere with `ALLOW_INSECURE_HTTP=true` (a warning is logged)
    /// - `GITHUB_ORG` → organisation scope, else `REPO_OWNER` (default `NREL`) + `REPO_NAME` (default
    ///   `EnergyPlus`) → repository scope
    /// - `GITHUB_TOKEN`, **or** `GITHUB_APP_ID` + `GITHUB_APP_INSTALLATION_ID` + `GITHUB_APP_PRIVATE_KEY_FILE`
    ///   (the key file is read here). Setting both kinds is an error.
    ///
    /// Empty values count as unset. Errors name the variable and the value (never a secret).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let api_url = match get("GITHUB_API_URL") {
            Some(raw) => parse_api_url(&raw)?,
            None => parse_api_url(DEFAULT_API_URL)?,
        };
        let allow_http = match get("ALLOW_INSECURE_HTTP") {
            None => false,
            Some(v) => parse_bool(&v).ok_or_else(|| {
                Error::Config(format!("ALLOW_INSECURE_HTTP={v:?}: expected true or false"))
            })?,
        };
        check_clear_text("GITHUB_API_URL", &api_url, allow_http)?;

        let scope = match get("GITHUB_ORG") {
            Some(org) => Scope::Org { org },
            None => Scope::Repo {
                owner: get("REPO_OWNER").unwrap_or_else(|| DEFAULT_REPO_OWNER.to_owned()),
                name: get("REPO_NAME").unwrap_or_else(|| DEFAULT_REPO_NAME.to_owned()),
            },
        };
        scope.validate()?;

        let token = get("GITHUB_TOKEN");
        let app_vars = [
            "GITHUB_APP_ID",
            "GITHUB_APP_INSTALLATION_ID",
            "GITHUB_APP_PRIVATE_KEY_FILE",
        ];
        let app_set: Vec<&str> = app_vars
            .iter()
            .copied()
            .filter(|k| get(k).is_some())
            .collect();

        let auth = match (token, app_set.is_empty()) {
            (Some(_), false) => {
                return Err(Error::Config(format!(
                    "both GITHUB_TOKEN and {} are set: use either a token or a GitHub App, not both",
                    app_set.join(", ")
                )));
            }
            (Some(t), true) => Auth::Token(SecretString::from(t)),
            (None, true) => {
                return Err(Error::Config(
                    "no GitHub credential: set GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_INSTALLATION_ID + \
                     GITHUB_APP_PRIVATE_KEY_FILE"
                        .to_owned(),
                ));
            }
            (None, false) => {
                let missing: Vec<&str> = app_vars
                    .iter()
                    .copied()
                    .filter(|k| get(k).is_none())
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::Config(format!(
                        "GitHub App credential incomplete: {} set but {} missing",
                        app_set.join(", "),
                        missing.join(", ")
                    )));
                }
                let app_id = get("GITHUB_APP_ID").unwrap_or_default();
                let raw_inst = get("GITHUB_APP_INSTALLATION_ID").unwrap_or_default();
                let installation_id = raw_inst.parse::<u64>().map_err(|_| {
                    Error::Config(format!(
                        "GITHUB_APP_INSTALLATION_ID={raw_inst:?} is not a positive integer"
                    ))
                })?;
                let path = get("GITHUB_APP_PRIVATE_KEY_FILE").unwrap_or_default();
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Config(format!(
                        "GITHUB_APP_PRIVATE_KEY_FILE={path:?} cannot be read: {e}"
                    ))
                })?;
                if !pem.contains("-----BEGIN") {
                    return Err(Error::Config(format!(
                        "GITHUB_APP_PRIVATE_KEY_FILE={path:?} does not contain a PEM private key"
                    )));
                }
                Auth::App {
                    app_id,
                    installation_id,
                    private_key_pem: SecretString::from(pem),
                }
            }
        };

        Ok(Self {
            api_url,
            scope,
            auth,
            user_agent: default_user_agent(),
        })
    }

    /// The web base matching `api_url`: `https://api.github.com` → `https://github.com`,
    /// `https://HOST/api/v3` (GHES) → `https://HOST`, anything else → its origin (test servers).
    pub fn web_base(&self) -> Url {
        let mut url = self.api_url.clone();
        if url.host_str() == Some("api.github.com") {
            let _ = url.set_host(Some("github.com"));
        }
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// The URL runners are configured with: [`Scope::html_url`] of [`Self::web_base`].
    pub fn runner_url(&self) -> Url {
        self.scope.html_url(&self.web_base())
    }

    /// Checks the scope names and the URL scheme.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate()?;
        if !matches!(self.api_url.scheme(), "http" | "https") || self.api_url.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "api_url {:?} is not an http(s) base URL",
                self.api_url.as_str()
            )));
        }
        if self.user_agent.trim().is_empty() {
            return Err(Error::Config(
                "user_agent is empty (GitHub requires a User-Agent)".to_owned(),
            ));
        }
        Ok(())
    }
}

fn parse_api_url(raw: &str) -> Result<Url> {
    let url = Url::parse(raw)
        .map_err(|e| Error::Config(format!("GITHUB_API_URL={raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Config(format!(
            "GITHUB_API_URL={raw:?} is not an http(s) URL"
        )));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Refuses clear-text `http://` to a host that is not loopback unless `allow` (`ALLOW_INSECURE_HTTP`), and
/// warns when it is allowed: the credential would travel unencrypted.
fn check_clear_text(var: &str, url: &Url, allow: bool) -> Result<()> {
    if url.scheme() != "http" || is_loopback(url) {
        return Ok(());
    }
    if !allow {
        return Err(Error::Config(format!(
            "{var}={:?}: clear-text http:// is refused for a host that is not loopback (127.0.0.0/8, ::1, \
             localhost): use https://, or set ALLOW_INSECURE_HTTP=true to accept it",
            url.as_str()
        )));
    }
    tracing::warn!(
        "{var}={:?} uses clear-text http:// to a host that is not loopback (ALLOW_INSECURE_HTTP=true): the \
         GitHub credential and every answer travel unencrypted",
        url.as_str()
    );
    Ok(())
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (case-insensitive).
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn validate_name(var: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{var}={value:?} is not a valid GitHub owner/repository/organisation name"
        )))
    }
}

/// `https://api.github.com/` as a [`Url`].
#[allow(clippy::expect_used)] // a constant, not external data: covered by the unit tests
pub fn default_api_url() -> Url {
    Url::parse(DEFAULT_API_URL).expect("DEFAULT_API_URL is a valid URL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_to_seed_repo_and_github_com() {
        let c = GitHubConfig::from_lookup(lookup(&[("GITHUB_TOKEN", "ghp_x")])).unwrap();
        assert_eq!(c.api_url.as_str(), "https://api.github.com/");
        assert_eq!(c.scope, Scope::repo("NREL", "EnergyPlus"));
        assert_eq!(
            c.runner_url().as_str(),
            "https://github.com/NREL/EnergyPlus"
        );
        assert!(matches!(c.auth, Auth::Token(_)));
    }

    #[test]
    fn org_scope_and_ghes_web_base() {
        let c = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_TOKEN", "ghp_x"),
            ("GITHUB_ORG", "acme"),
            ("GITHUB_API_URL", "https://ghe.example.com/api/v3"),
        ]))
        .unwrap();
        assert_eq!(c.scope, Scope::org("acme"));
        assert_eq!(c.web_base().as_str(), "https://ghe.example.com/");
        assert_eq!(c.runner_url().as_str(), "https://ghe.example.com/acme");
    }

    #[test]
    fn both_credentials_is_an_error_naming_both() {
        let e = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_TOKEN", "ghp_secret"),
            ("GITHUB_APP_ID", "1"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GITHUB_TOKEN") && e.contains("GITHUB_APP_ID"),
            "{e}"
        );
        assert!(!e.contains("ghp_secret"), "{e}");
    }

    #[test]
    fn missing_and_incomplete_credentials() {
        let e = GitHubConfig::from_lookup(lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GITHUB_TOKEN"), "{e}");
        let e = GitHubConfig::from_lookup(lookup(&[("GITHUB_APP_ID", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("GITHUB_APP_INSTALLATION_ID") && e.contains("GITHUB_APP_PRIVATE_KEY_FILE"),
            "{e}"
        );
    }

    #[test]
    fn app_key_file_errors_name_variable_and_path() {
        let e = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_INSTALLATION_ID", "2"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GITHUB_APP_PRIVATE_KEY_FILE") && e.contains("/nonexistent/key.pem"),
            "{e}"
        );
        let e = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_INSTALLATION_ID", "x2"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GITHUB_APP_INSTALLATION_ID") && e.contains("x2"),
            "{e}"
        );
    }

    #[test]
    fn app_key_file_is_read_and_redacted() {
        let dir = std::env::temp_dir().join(format!("ghr-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(
            &path,
            "-----BEGIN RSA PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let c = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_APP_ID", "Iv1.abc"),
            ("GITHUB_APP_INSTALLATION_ID", "42"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", path.to_str().unwrap()),
        ]))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(dbg.contains("Iv1.abc") && dbg.contains("42"), "{dbg}");
        assert!(!dbg.contains("SECRETKEYMATERIAL"), "{dbg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clear_text_http_is_refused_outside_loopback_unless_allowed() {
        for url in [
            "http://ghes.example.com/api/v3",
            "http://10.0.0.5:8080",
            "http://[fe80::1]/api/v3",
            "http://localhost.example.com",
        ] {
            let e = GitHubConfig::from_lookup(lookup(&[
                ("GITHUB_TOKEN", "ghp_secret"),
                ("GITHUB_API_URL", url),
            ]))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("GITHUB_API_URL") && e.contains("ALLOW_INSECURE_HTTP"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(!e.contains("ghp_secret"), "{e}");
            let c = GitHubConfig::from_lookup(lookup(&[
                ("GITHUB_TOKEN", "t"),
                ("GITHUB_API_URL", url),
                ("ALLOW_INSECURE_HTTP", "true"),
            ]))
            .unwrap();
            assert_eq!(c.api_url.scheme(), "http");
        }
        for url in [
            "http://127.0.0.1:9000",
            "http://127.8.9.10/api/v3",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "http://[::1]:8080",
            "https://ghes.example.com/api/v3",
        ] {
            GitHubConfig::from_lookup(lookup(&[("GITHUB_TOKEN", "t"), ("GITHUB_API_URL", url)]))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let e = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_TOKEN", "t"),
            ("ALLOW_INSECURE_HTTP", "perhaps"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ALLOW_INSECURE_HTTP") && e.contains("perhaps"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = GitHubConfig::from_lookup(lookup(&[
            ("GITHUB_TOKEN", "t"),
            ("GITHUB_API_URL", "not a url"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GITHUB_API_URL") && e.contains("not a url"),
            "{e}"
        );
        let e = GitHubConfig::from_lookup(lookup(&[("GITHUB_TOKEN", "t"), ("REPO_NAME", "a/b")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REPO_NAME") && e.contains("a/b"), "{e}");
    }
}
