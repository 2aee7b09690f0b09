//! Client configuration: where, who, and how to trust the server.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::error::Error;
use crate::lenient::parse_bool_str;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server's TLS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Verify against the system's trusted roots (a certificate from a public CA, e.g. ACME).
    SystemRoots,
    /// Verify against the CA certificate(s) in this PEM file only (e.g. the cluster's
    /// `/etc/pve/pve-root-ca.pem`). Host names are checked.
    CaFile(PathBuf),
    /// Accept exactly the server certificate with this SHA-256 fingerprint (what Proxmox's own
    /// tools do for self-signed hosts). Host name and expiry are not checked; the handshake
    /// signature still is.
    Fingerprint(Fingerprint),
    /// Accept any certificate. Explicit opt-in; a warning is logged when the client is built.
    Insecure,
}

/// A SHA-256 certificate fingerprint.
///
/// Parses `AA:BB:…` (as shown by `pvenode cert info`) or plain hex, case-insensitive.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        Fingerprint(sha2::Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let trimmed = s.trim();
        let hex_digits: String = if trimmed.contains(':') {
            let parts: Vec<&str> = trimmed.split(':').collect();
            if parts.len() != 32 || parts.iter().any(|p| p.len() != 2) {
                return Err(Error::InvalidValue {
                    what: "TLS fingerprint",
                    value: s.to_owned(),
                    reason: "expected 32 colon-separated hex bytes (SHA-256)".into(),
                });
            }
            parts.concat()
        } else {
            trimmed.to_owned()
        };
        let bytes = hex::decode(&hex_digits).map_err(|e| Error::InvalidValue {
            what: "TLS fingerprint",
            value: s.to_owned(),
            reason: format!("not hexadecimal: {e}"),
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| Error::InvalidValue {
            what: "TLS fingerprint",
            value: s.to_owned(),
            reason: format!("expected 32 bytes (SHA-256), got {}", b.len()),
        })?;
        Ok(Fingerprint(arr))
    }
}

impl fmt::Display for Fingerprint {
    /// `AA:BB:…`, as Proxmox shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Everything needed to build a [`crate::ProxmoxClient`].
#[derive(Clone)]
pub struct ProxmoxConfig {
    /// API root, e.g. `https://pve1:8006/api2/json` (with or without trailing slash; `http://`
    /// works for tests).
    pub base_url: Url,
    /// API token id, `USER@REALM!TOKENID`.
    pub token_id: String,
    /// API token secret (a UUID).
    pub token_secret: SecretString,
    /// Certificate checking.
    pub tls: TlsMode,
    /// Per-request timeout (connect + answer).
    pub timeout: Duration,
}

impl fmt::Debug for ProxmoxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxConfig")
            .field("base_url", &self.base_url.as_str())
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProxmoxConfig {
    /// A config with system-root TLS and the default timeout.
    pub fn new(base_url: Url, token_id: impl Into<String>, token_secret: SecretString) -> Self {
        ProxmoxConfig {
            base_url,
            token_id: token_id.into(),
            token_secret,
            tls: TlsMode::SystemRoots,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Reads the dispatcher's environment variables through `lookup` (pass
    /// `|k| std::env::var(k).ok()` in programs, a map in tests):
    ///
    /// - `PROXMOX_URL` (required): the API root, `https://host:8006/api2/json`;
    /// - `PROXMOX_TOKEN_ID` (required): `USER@REALM!TOKENID`;
    /// - `PROXMOX_TOKEN_SECRET` (required);
    /// - `PROXMOX_VERIFY_SSL` (default `true`; `false` = [`TlsMode::Insecure`]);
    /// - `PROXMOX_CA_CERT`: PEM file → [`TlsMode::CaFile`];
    /// - `PROXMOX_TLS_FINGERPRINT`: SHA-256 → [`TlsMode::Fingerprint`];
    /// - `ALLOW_INSECURE_HTTP` (default `false`): accept an `http://` `PROXMOX_URL` whose host is not
    ///   loopback (`127.0.0.0/8`, `::1`, `localhost`), with a warning; refused otherwise.
    ///
    /// A CA file or fingerprint wins over `PROXMOX_VERIFY_SSL=false` (a warning is logged);
    /// setting both a CA file and a fingerprint is an error. Empty values count as unset.
    /// Errors name the variable and its value, never the secret.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let required = |k: &str| {
            get(k).ok_or_else(|| Error::InvalidConfig {
                field: k.to_owned(),
                value: String::new(),
                reason: "required but not set".into(),
            })
        };

        let url_text = required("PROXMOX_URL")?;
        let base_url = parse_base_url(url_text.trim()).map_err(|reason| Error::InvalidConfig {
            field: "PROXMOX_URL".into(),
            value: url_text.clone(),
            reason,
        })?;
        let allow_http = match get("ALLOW_INSECURE_HTTP") {
            None => false,
            Some(v) => parse_bool_str(&v).ok_or_else(|| Error::InvalidConfig {
                field: "ALLOW_INSECURE_HTTP".into(),
                value: v.clone(),
                reason: "expected true or false".into(),
            })?,
        };
        if base_url.scheme() == "http" && !is_loopback(&base_url) {
            if !allow_http {
                return Err(Error::InvalidConfig {
                    field: "PROXMOX_URL".into(),
                    value: url_text.trim().to_owned(),
                    reason: "clear-text http:// is refused for a host that is not loopback \
                             (127.0.0.0/8, ::1, localhost): use https://, or set ALLOW_INSECURE_HTTP=true \
                             to accept it"
                        .into(),
                });
            }
            tracing::warn!(
                "PROXMOX_URL={:?} uses clear-text http:// to a host that is not loopback \
                 (ALLOW_INSECURE_HTTP=true): the API token and every answer travel unencrypted",
                base_url.as_str()
            );
        }

        let token_id = required("PROXMOX_TOKEN_ID")?.trim().to_owned();
        check_token_id(&token_id).map_err(|reason| Error::InvalidConfig {
            field: "PROXMOX_TOKEN_ID".into(),
            value: token_id.clone(),
            reason,
        })?;
        let token_secret = SecretString::from(required("PROXMOX_TOKEN_SECRET")?.trim().to_owned());

        let verify = match get("PROXMOX_VERIFY_SSL") {
            None => true,
            Some(v) => parse_bool_str(&v).ok_or_else(|| Error::InvalidConfig {
                field: "PROXMOX_VERIFY_SSL".into(),
                value: v.clone(),
                reason: "expected true or false".into(),
            })?,
        };
        let ca = get("PROXMOX_CA_CERT").map(|v| PathBuf::from(v.trim()));
        let fingerprint = match get("PROXMOX_TLS_FINGERPRINT") {
            None => None,
            Some(v) => Some(v.parse::<Fingerprint>().map_err(|e| Error::InvalidConfig {
                field: "PROXMOX_TLS_FINGERPRINT".into(),
                value: v.clone(),
                reason: match e {
                    Error::InvalidValue { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?),
        };
        let tls = match (ca, fingerprint) {
            (Some(ca), Some(_)) => {
                return Err(Error::InvalidConfig {
                    field: "PROXMOX_CA_CERT".into(),
                    value: ca.display().to_string(),
                    reason: "set either PROXMOX_CA_CERT or PROXMOX_TLS_FINGERPRINT, not both"
                        .into(),
                });
            }
            (Some(ca), None) => TlsMode::CaFile(ca),
            (None, Some(fp)) => TlsMode::Fingerprint(fp),
            (None, None) if verify => TlsMode::SystemRoots,
            (None, None) => TlsMode::Insecure,
        };
        if !verify && tls != TlsMode::Insecure {
            tracing::warn!(
                "PROXMOX_VERIFY_SSL=false ignored: PROXMOX_CA_CERT or PROXMOX_TLS_FINGERPRINT is set and is used instead"
            );
        }
        Ok(ProxmoxConfig {
            base_url,
            token_id,
            token_secret,
            tls,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// Whether `url`'s host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parses and checks an API root URL.
pub(crate) fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    check_base_url(&url)?;
    Ok(url)
}

pub(crate) fn check_base_url(url: &Url) -> Result<(), String> {
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("scheme must be https (or http for tests)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.cannot_be_a_base() {
        return Err("cannot be a base URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use PROXMOX_TOKEN_ID/SECRET)".into());
    }
    Ok(())
}

/// `USER@REALM!TOKENID`.
pub(crate) fn check_token_id(id: &str) -> Result<(), String> {
    let ok = id
        .split_once('@')
        .and_then(|(user, rest)| {
            let (realm, token) = rest.split_once('!')?;
            Some(!user.is_empty() && !realm.is_empty() && !token.is_empty())
        })
        .unwrap_or(false);
    if !ok
        || id
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c.is_control())
    {
        return Err("expected USER@REALM!TOKENID, e.g. dispatcher@pve!runners".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    const FP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("PROXMOX_URL", "https://pve1:8006/api2/json"),
        ("PROXMOX_TOKEN_ID", "dispatcher@pve!runners"),
        ("PROXMOX_TOKEN_SECRET", "0f0e0d0c-SECRET-VALUE"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn fingerprint_formats() {
        let a: Fingerprint = FP.parse().unwrap();
        let b: Fingerprint = FP.replace(':', "").to_lowercase().parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), FP);
        assert!("AB:CD".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        assert!("ab".repeat(31).parse::<Fingerprint>().is_err());
        assert!(FP.replace("AB:", "ABC").parse::<Fingerprint>().is_err());
    }

    #[test]
    fn from_lookup_defaults_and_modes() {
        let c = ProxmoxConfig::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(c.tls, TlsMode::SystemRoots);
        assert_eq!(c.token_id, "dispatcher@pve!runners");
        assert_eq!(c.token_secret.expose_secret(), "0f0e0d0c-SECRET-VALUE");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);

        let c =
            ProxmoxConfig::from_lookup(lookup(&with(&[("PROXMOX_VERIFY_SSL", "false")]))).unwrap();
        assert_eq!(c.tls, TlsMode::Insecure);
        let c = ProxmoxConfig::from_lookup(lookup(&with(&[("PROXMOX_VERIFY_SSL", "1")]))).unwrap();
        assert_eq!(c.tls, TlsMode::SystemRoots);
        let c = ProxmoxConfig::from_lookup(lookup(&with(&[(
            "PROXMOX_CA_CERT",
            "/etc/pve/pve-root-ca.pem",
        )])))
        .unwrap();
        assert_eq!(c.tls, TlsMode::CaFile("/etc/pve/pve-root-ca.pem".into()));
        let c = ProxmoxConfig::from_lookup(lookup(&with(&[
            ("PROXMOX_TLS_FINGERPRINT", FP),
            ("PROXMOX_VERIFY_SSL", "false"),
        ])))
        .unwrap();
        assert!(matches!(c.tls, TlsMode::Fingerprint(_)));
        let c = ProxmoxConfig::from_lookup(lookup(&with(&[("PROXMOX_CA_CERT", "")]))).unwrap();
        assert_eq!(c.tls, TlsMode::SystemRoots);
    }

    #[test]
    fn from_lookup_errors_name_variable_and_value_never_secret() {
        type Env<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Env<'_>, &str, &str)> = vec![
            (BASE[1..].to_vec(), "PROXMOX_URL", "required"),
            (
                vec![BASE[0], BASE[2], ("PROXMOX_TOKEN_ID", "root@pam")],
                "PROXMOX_TOKEN_ID",
                "root@pam",
            ),
            (vec![BASE[0], BASE[1]], "PROXMOX_TOKEN_SECRET", "required"),
            (
                vec![
                    ("PROXMOX_URL", "ftp://pve:8006/api2/json"),
                    BASE[1],
                    BASE[2],
                ],
                "PROXMOX_URL",
                "ftp://pve:8006/api2/json",
            ),
            (
                vec![("PROXMOX_URL", "pve1:8006"), BASE[1], BASE[2]],
                "PROXMOX_URL",
                "pve1:8006",
            ),
            (
                with(&[("PROXMOX_VERIFY_SSL", "maybe")]),
                "PROXMOX_VERIFY_SSL",
                "maybe",
            ),
            (
                with(&[("PROXMOX_TLS_FINGERPRINT", "AB:CD")]),
                "PROXMOX_TLS_FINGERPRINT",
                "AB:CD",
            ),
            (
                with(&[
                    ("PROXMOX_TLS_FINGERPRINT", FP),
                    ("PROXMOX_CA_CERT", "/ca.pem"),
                ]),
                "PROXMOX_CA_CERT",
                "both",
            ),
        ];
        for (env, var, needle) in cases {
            let err = ProxmoxConfig::from_lookup(lookup(&env)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(var), "{text}");
            assert!(text.contains(needle), "{text}");
            assert!(!text.contains("SECRET-VALUE"), "{text}");
        }
    }

    #[test]
    fn debug_redacts_secret() {
        let c = ProxmoxConfig::from_lookup(lookup(BASE)).unwrap();
        let dbg = format!("{c:?} {c:#?}");
        assert!(!dbg.contains("SECRET-VALUE"), "{dbg}");
        assert!(dbg.contains("dispatcher@pve!runners"));
    }

    #[test]
    fn clear_text_http_is_refused_outside_loopback_unless_allowed() {
        for url in [
            "http://pve1:8006/api2/json",
            "http://192.0.2.10:8006/api2/json",
            "http://[fe80::1]:8006/api2/json",
        ] {
            let env = [("PROXMOX_URL", url), BASE[1], BASE[2]];
            let e = ProxmoxConfig::from_lookup(lookup(&env))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("PROXMOX_URL") && e.contains(url) && e.contains("ALLOW_INSECURE_HTTP"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(!e.contains("SECRET-VALUE"), "{e}");
            let allowed = [
                ("PROXMOX_URL", url),
                BASE[1],
                BASE[2],
                ("ALLOW_INSECURE_HTTP", "true"),
            ];
            let c = ProxmoxConfig::from_lookup(lookup(&allowed)).unwrap();
            assert_eq!(c.base_url.scheme(), "http");
        }
        for url in [
            "http://127.0.0.1:8006/api2/json",
            "http://127.1.2.3:8006/api2/json",
            "http://localhost:8006/api2/json",
            "http://[::1]:8006/api2/json",
            "https://pve1:8006/api2/json",
        ] {
            let env = [("PROXMOX_URL", url), BASE[1], BASE[2]];
            ProxmoxConfig::from_lookup(lookup(&env)).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let e = ProxmoxConfig::from_lookup(lookup(&with(&[("ALLOW_INSECURE_HTTP", "sometimes")])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ALLOW_INSECURE_HTTP") && e.contains("sometimes"),
            "{e}"
        );
    }

    #[test]
    fn base_url_trailing_slash_accepted() {
        assert!(parse_base_url("https://pve:8006/api2/json/").is_ok());
        assert!(parse_base_url("http://127.0.0.1:1234/api2/json").is_ok());
        assert!(parse_base_url("https://user:pw@pve:8006/api2/json").is_err());
    }
}
