//! `workflow_job` webhook payloads and the `X-Hub-Signature-256` check.
//!
//! Verify the signature on the **raw** body first, then parse it:
//!
//! ```
//! use github_runners::webhooks::{parse_workflow_job, signature_header, verify_signature};
//! use secrecy::SecretString;
//!
//! let secret = SecretString::from("It's a Secret to Everybody");
//! let body = b"Hello, World!";
//! let header = signature_header(&secret, body);
//! assert_eq!(header, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
//! assert!(verify_signature(&secret, body, Some(&header)).is_ok());
//! assert!(parse_workflow_job(body).is_err()); // not a workflow_job payload
//! ```

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Header naming the event (`workflow_job`).
pub const EVENT_HEADER: &str = "X-GitHub-Event";
/// Header with the unique delivery id (deduplicate on it).
pub const DELIVERY_HEADER: &str = "X-GitHub-Delivery";

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header does not start with `sha256=`.
    #[error("X-Hub-Signature-256 does not start with \"sha256=\"")]
    MissingPrefix,
    /// The digest is not 64 hexadecimal characters.
    #[error("X-Hub-Signature-256 digest is not 64 hex characters")]
    Malformed,
    /// The digest does not match the body.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

// HMAC accepts keys of any length, so this is always `Some`.
fn mac(secret: &SecretString) -> Option<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).ok()
}

/// Checks `header` (`sha256=` + hex HMAC-SHA256 of `raw_body` with `secret`) in constant time.
pub fn verify_signature(
    secret: &SecretString,
    raw_body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::MissingPrefix)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut m = mac(secret).ok_or(SignatureError::Mismatch)?;
    m.update(raw_body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value GitHub would send for `raw_body` (for simulators and tests).
pub fn signature_header(secret: &SecretString, raw_body: &[u8]) -> String {
    let Some(mut m) = mac(secret) else {
        return String::new();
    };
    m.update(raw_body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Parses a `workflow_job` payload.
pub fn parse_workflow_job(raw_body: &[u8]) -> Result<WorkflowJobEvent, serde_json::Error> {
    serde_json::from_slice(raw_body)
}

/// The `action` of a `workflow_job` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowJobAction {
    /// A job is waiting for a runner.
    Queued,
    /// A runner picked the job up.
    InProgress,
    /// The job finished.
    Completed,
    /// The job waits for an environment approval.
    Waiting,
    /// An action this crate does not know.
    #[serde(other)]
    Other,
}

/// A `workflow_job` webhook delivery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowJobEvent {
    /// What happened.
    pub action: WorkflowJobAction,
    /// The job.
    pub workflow_job: WebhookJob,
    /// The repository of the job.
    pub repository: WebhookRepository,
    /// The organisation, for org-owned repositories.
    #[serde(default)]
    pub organization: Option<WebhookOrganization>,
    /// The App installation, when delivered to a GitHub App.
    #[serde(default)]
    pub installation: Option<WebhookInstallation>,
}

/// The `workflow_job` member.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookJob {
    /// Job id.
    pub id: u64,
    /// Run id (declared as `number` in the schema: accepted as an integral float too).
    #[serde(deserialize_with = "lenient_u64")]
    pub run_id: u64,
    /// Run attempt.
    #[serde(default)]
    pub run_attempt: Option<u64>,
    /// Job name.
    #[serde(default)]
    pub name: String,
    /// Workflow name.
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// Branch.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// `runs-on` labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `queued`, `in_progress`, `completed`, `waiting`.
    pub status: String,
    /// Conclusion once completed.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// Runner id (null while queued; `number` in some schemas: integral floats accepted).
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub runner_id: Option<u64>,
    /// Runner name (null while queued).
    #[serde(default)]
    pub runner_name: Option<String>,
    /// Runner group id (null while queued; integral floats accepted).
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub runner_group_id: Option<u64>,
    /// Runner group name (null while queued).
    #[serde(default)]
    pub runner_group_name: Option<String>,
    /// Creation time (None when absent or not RFC 3339).
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<OffsetDateTime>,
    /// Start time (None when absent or not RFC 3339).
    #[serde(default, deserialize_with = "lenient_time")]
    pub started_at: Option<OffsetDateTime>,
    /// Completion time.
    #[serde(default, deserialize_with = "lenient_time")]
    pub completed_at: Option<OffsetDateTime>,
    /// Web URL.
    #[serde(default)]
    pub html_url: Option<String>,
}

/// The `repository` member (subset).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookRepository {
    /// Repository id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Owner.
    #[serde(default)]
    pub owner: Option<WebhookAccount>,
}

/// An account (`login` + id).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookAccount {
    /// Login.
    pub login: String,
    /// Id.
    #[serde(default)]
    pub id: Option<u64>,
}

/// The `organization` member (subset).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookOrganization {
    /// Organisation login.
    pub login: String,
    /// Organisation id.
    pub id: u64,
}

/// The `installation` member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookInstallation {
    /// Installation id.
    pub id: u64,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number_to_u64(serde_json::Number::deserialize(d)?)
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(number_to_u64)
        .transpose()
}

fn number_to_u64<E: serde::de::Error>(n: serde_json::Number) -> Result<u64, E> {
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative integer, got {n}"
        ))),
    }
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.and_then(|s| {
        OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).ok()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn official_test_vector() {
        let s = SecretString::from(SECRET);
        assert_eq!(signature_header(&s, b"Hello, World!"), VECTOR);
        assert_eq!(verify_signature(&s, b"Hello, World!", Some(VECTOR)), Ok(()));
    }

    #[test]
    fn rejections() {
        let s = SecretString::from(SECRET);
        let body = b"Hello, World!";
        assert_eq!(
            verify_signature(&s, body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&s, body, Some(&VECTOR[7..])),
            Err(SignatureError::MissingPrefix)
        );
        assert_eq!(
            verify_signature(&s, body, Some("sha1=abc")),
            Err(SignatureError::MissingPrefix)
        );
        assert_eq!(
            verify_signature(&s, body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        let nonhex = format!("sha256={}", "g".repeat(64));
        assert_eq!(
            verify_signature(&s, body, Some(&nonhex)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(&s, body, Some("sha256=")),
            Err(SignatureError::Malformed)
        );
        // wrong signature (last digit changed)
        let wrong = format!("{}6", &VECTOR[..VECTOR.len() - 1]);
        assert_eq!(
            verify_signature(&s, body, Some(&wrong)),
            Err(SignatureError::Mismatch)
        );
        // body changed by one byte
        assert_eq!(
            verify_signature(&s, b"Hello, World?", Some(VECTOR)),
            Err(SignatureError::Mismatch)
        );
        // wrong secret
        let other = SecretString::from("it's a secret to everybody");
        assert_eq!(
            verify_signature(&other, body, Some(VECTOR)),
            Err(SignatureError::Mismatch)
        );
        // multibyte garbage must not panic
        assert!(
            verify_signature(&s, body, Some("sha256=ééééééééééééééééééééééééééééééééé")).is_err()
        );
    }

    mod arbitrary {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::*;
        use crate::arbitrary_json::{mutated, value};

        fn job() -> Value {
            json!({
                "id": 4242, "run_id": 99, "run_attempt": 1, "name": "build", "workflow_name": "CI",
                "head_branch": "main", "labels": ["self-hosted", "linux"], "status": "queued",
                "conclusion": null, "runner_id": null, "runner_name": null, "runner_group_id": null,
                "runner_group_name": null, "created_at": "2026-01-01T00:00:00Z",
                "started_at": "2026-01-01T00:00:00Z", "completed_at": null,
                "html_url": "https://github.com/o/r/actions/runs/99/job/4242",
            })
        }

        fn delivery() -> impl Strategy<Value = Value> {
            (
                mutated(job()),
                mutated(json!({"id": 1, "name": "r", "full_name": "o/r", "owner": {"login": "o", "id": 1}})),
                prop_oneof![
                    Just(json!("queued")),
                    Just(json!("completed")),
                    Just(json!("requested")),
                    value(),
                ],
                prop::option::of(value()),
            )
                .prop_map(|(job, repository, action, installation)| {
                    let mut v = json!({"action": action, "workflow_job": job, "repository": repository});
                    if let Some(i) = installation {
                        v["installation"] = i;
                    }
                    v
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any body — near-valid deliveries, arbitrary JSON, arbitrary bytes — parses or fails without a
            /// panic; the error's position is what the server reports.
            #[test]
            fn any_webhook_body_parses_or_fails_cleanly(
                near in delivery(),
                other in value(),
                bytes in prop::collection::vec(any::<u8>(), 0..256),
            ) {
                for body in [near.to_string().into_bytes(), other.to_string().into_bytes(), bytes] {
                    if let Err(e) = parse_workflow_job(&body) {
                        let _ = (e.classify(), e.line(), e.column());
                    }
                    let secret = SecretString::from("s");
                    let header = signature_header(&secret, &body);
                    prop_assert!(verify_signature(&secret, &body, Some(&header)).is_ok());
                }
            }

            /// Signature headers of any content are rejected without a panic.
            #[test]
            fn any_signature_header_is_checked_without_panic(header in "\\PC{0,80}", hex in "[0-9a-fA-F]{60,68}") {
                let secret = SecretString::from("s");
                let _ = verify_signature(&secret, b"[]", Some(&header));
                let prefixed = format!("sha256={hex}");
                prop_assert!(verify_signature(&secret, b"[]", Some(&prefixed)).is_err());
            }
        }
    }

    #[test]
    fn unknown_action_is_other() {
        let a: WorkflowJobAction = serde_json::from_str("\"requested\"").unwrap();
        assert_eq!(a, WorkflowJobAction::Other);
        let a: WorkflowJobAction = serde_json::from_str("\"in_progress\"").unwrap();
        assert_eq!(a, WorkflowJobAction::InProgress);
    }
}
