//! GitHub App auth: JWT header + claims verified with the public key of a key pair generated here; the
//! installation token cached across calls and refreshed near expiry; PAT auth header; 401.

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use common::{Harness, example, now_unix};
use github_runners::{Auth, Error, GitHubClient, GitHubConfig, GitHubRunners, Scope};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

const INSTALLATION: u64 = 4242;
const APP_ID: &str = "Iv23liTESTclientid";
const INST_TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

struct TestKey {
    pkcs8_pem: String,
    pkcs1_pem: String,
    public_pkcs1_der: Vec<u8>,
}

/// Reads one DER TLV header at `i`: (tag, content start, content length).
fn tlv(der: &[u8], i: usize) -> (u8, usize, usize) {
    let tag = der[i];
    let first = der[i + 1] as usize;
    if first < 0x80 {
        return (tag, i + 2, first);
    }
    let n = first & 0x7f;
    let len = der[i + 2..i + 2 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    (tag, i + 2 + n, len)
}

fn test_key() -> TestKey {
    let kp = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = kp.as_der().unwrap();
    let pkcs8 = pkcs8.as_ref().to_vec();
    // PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm SEQUENCE, privateKey OCTET STRING (RSAPrivateKey) }
    let (t, start, _) = tlv(&pkcs8, 0);
    assert_eq!(t, 0x30);
    let (t, s, l) = tlv(&pkcs8, start);
    assert_eq!(t, 0x02);
    let (t, s, l) = tlv(&pkcs8, s + l);
    assert_eq!(t, 0x30);
    let (t, s, l2) = tlv(&pkcs8, s + l);
    assert_eq!(t, 0x04);
    let pkcs1 = pkcs8[s..s + l2].to_vec();
    let _ = l;
    TestKey {
        pkcs8_pem: common::pem("PRIVATE KEY", &pkcs8),
        pkcs1_pem: common::pem("RSA PRIVATE KEY", &pkcs1),
        public_pkcs1_der: kp.public_key().as_ref().to_vec(),
    }
}

fn app_auth(pem: &str) -> Auth {
    Auth::App {
        app_id: APP_ID.into(),
        installation_id: INSTALLATION,
        private_key_pem: SecretString::from(pem.to_owned()),
    }
}

fn token_response(expires_in_secs: i64, token: &str) -> ResponseTemplate {
    let mut body = example("installation-token");
    body["token"] = token.into();
    let exp = time::OffsetDateTime::from_unix_timestamp(now_unix() + expires_in_secs).unwrap();
    body["expires_at"] = exp
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    ResponseTemplate::new(201).set_body_json(body)
}

#[derive(Debug, Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

async fn mount_runners(h: &Harness, bearer: &str, times: u64) {
    Mock::given(method("GET"))
        .and(path("/repos/octo-org/octo-repo/actions/runners"))
        .and(header("authorization", format!("Bearer {bearer}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner-paginated")))
        .expect(times)
        .mount(&h.server)
        .await;
}

#[tokio::test]
async fn jwt_is_rs256_with_backdated_iat_and_short_exp_and_token_is_cached() {
    let key = test_key();
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(token_response(3600, INST_TOKEN))
        .expect(1)
        .mount(&h.server)
        .await;
    mount_runners(&h, INST_TOKEN, 3).await;

    let c = GitHubClient::new(h.config(
        Scope::repo("octo-org", "octo-repo"),
        app_auth(&key.pkcs1_pem),
    ))
    .unwrap();
    let before = now_unix();
    for _ in 0..3 {
        assert_eq!(c.list_runners().await.unwrap().len(), 2);
    }
    let after = now_unix();

    let reqs = h.server.received_requests().await.unwrap();
    let token_req = reqs
        .iter()
        .find(|r| r.url.path().ends_with("/access_tokens"))
        .unwrap();
    assert!(token_req.body.is_empty());
    let auth = token_req
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    let jwt = auth.strip_prefix("Bearer ").unwrap();

    let hdr = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(hdr.alg, Algorithm::RS256);
    assert_eq!(hdr.typ.as_deref(), Some("JWT"));
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[APP_ID]);
    v.set_required_spec_claims(&["iat", "exp", "iss"]);
    let data =
        jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_rsa_der(&key.public_pkcs1_der), &v)
            .unwrap();
    let c2 = data.claims;
    assert_eq!(c2.iss, APP_ID);
    assert!(c2.iat >= before - 61 && c2.iat <= after - 59, "iat {c2:?}");
    assert!(
        c2.exp <= after + 9 * 60 && c2.exp > before + 8 * 60,
        "exp {c2:?}"
    );
    assert!(c2.exp - c2.iat <= 10 * 60);

    // A different key does not verify it.
    let other = test_key();
    assert!(
        jsonwebtoken::decode::<Claims>(
            jwt,
            &DecodingKey::from_rsa_der(&other.public_pkcs1_der),
            &v
        )
        .is_err()
    );
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn installation_token_is_refreshed_near_expiry() {
    let key = test_key();
    let h = Harness::start().await;
    // Expires in 4 minutes: inside the 5-minute margin, so every call mints a new one.
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(token_response(4 * 60, INST_TOKEN))
        .expect(2)
        .mount(&h.server)
        .await;
    mount_runners(&h, INST_TOKEN, 2).await;
    let c = GitHubClient::new(h.config(
        Scope::repo("octo-org", "octo-repo"),
        app_auth(&key.pkcs8_pem),
    ))
    .unwrap();
    c.list_runners().await.unwrap();
    c.list_runners().await.unwrap();
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn unauthorized_drops_the_cached_installation_token() {
    let key = test_key();
    let h = Harness::start().await;
    let long = "ghs_".to_owned() + &"A".repeat(120); // stateless tokens are longer than 40 chars
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(token_response(3600, &long))
        .expect(2)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo-org/octo-repo/actions/runners"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&h.server)
        .await;
    mount_runners(&h, &long, 1).await;
    let c = GitHubClient::new(h.config(
        Scope::repo("octo-org", "octo-repo"),
        app_auth(&key.pkcs8_pem),
    ))
    .unwrap();
    let err = c.list_runners().await.unwrap_err();
    assert!(
        matches!(&err, Error::Auth(m) if m.contains("Bad credentials")),
        "{err}"
    );
    c.list_runners().await.unwrap();
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn app_config_from_env_lookup_works_end_to_end() {
    let key = test_key();
    let dir = std::env::temp_dir().join(format!("ghr-auth-{}-{}", std::process::id(), now_unix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("app.pem");
    std::fs::write(&key_path, &key.pkcs1_pem).unwrap();
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/app/installations/{INSTALLATION}/access_tokens"
        )))
        .respond_with(token_response(3600, INST_TOKEN))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orgs/octo-org/actions/runners"))
        .and(header("authorization", format!("Bearer {INST_TOKEN}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner-paginated")))
        .expect(1)
        .mount(&h.server)
        .await;
    let uri = h.uri();
    let kp = key_path.to_str().unwrap().to_owned();
    let cfg = GitHubConfig::from_lookup(|k| match k {
        "GITHUB_API_URL" => Some(uri.clone()),
        "GITHUB_ORG" => Some("octo-org".into()),
        "GITHUB_APP_ID" => Some(APP_ID.into()),
        "GITHUB_APP_INSTALLATION_ID" => Some(INSTALLATION.to_string()),
        "GITHUB_APP_PRIVATE_KEY_FILE" => Some(kp.clone()),
        _ => None,
    })
    .unwrap();
    let c = GitHubClient::new(cfg).unwrap();
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(h.finish().await, 2);
}

#[tokio::test]
async fn invalid_key_fails_at_construction_without_echoing_it() {
    let h = Harness::start().await;
    let bogus = "-----BEGIN RSA PRIVATE KEY-----\nTm90QUtleVNFQ1JFVE1BVEVSSUFM\n-----END RSA PRIVATE KEY-----\n";
    let err = GitHubClient::new(h.config(Scope::repo("o", "r"), app_auth(bogus))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Auth(_)), "{msg}");
    assert!(
        msg.contains(APP_ID) && !msg.contains("Tm90QUtleVNFQ1JFVE1BVEVSSUFM"),
        "{msg}"
    );
    assert_eq!(h.finish().await, 0);
}

#[tokio::test]
async fn personal_access_token_is_sent_as_bearer_and_401_is_auth_error() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/octo-org/octo-repo/actions/runners/23"))
        .and(header("authorization", format!("Bearer {}", common::TOKEN)))
        .and(header("user-agent", "github-runners-tests"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h.client().runner(23).await.unwrap_err();
    assert!(matches!(&err, Error::Auth(_)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(h.finish().await, 1);
}
