//! No token, JWT, private key, installation token, registration token or JIT config in any Debug, Display or
//! log output: a full App-authenticated session runs under a TRACE-level tracing subscriber writing to a
//! buffer, then the buffer and every Debug/Display rendering are searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use common::{Harness, example, now_unix};
use github_runners::{Auth, Error, GitHubClient, GitHubConfig, GitHubRunners, JitRequest, Scope};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const INST_TOKEN: &str = "ghs_INSTALLATIONtokenSECRET0123456789abcdefXYZ";
const REG_TOKEN: &str = "AREGISTRATIONTOKENSECRET77";
const JIT_CONFIG: &str = "eyJKSVRjb25maWdTRUNSRVQiOiJ2YWx1ZSJ9";
const WEBHOOK_SECRET: &str = "whsec-SECRET-value";

#[tokio::test]
async fn secrets_never_appear_in_debug_display_or_logs() {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buf.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let kp = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pem = common::pem("PRIVATE KEY", kp.as_der().unwrap().as_ref());
    let pem_body_line = pem.lines().nth(3).unwrap().to_owned();

    let h = Harness::start().await;
    let mut tok = example("installation-token");
    tok["token"] = INST_TOKEN.into();
    tok["expires_at"] = time::OffsetDateTime::from_unix_timestamp(now_unix() + 3600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    Mock::given(method("POST"))
        .and(path("/app/installations/77/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(tok))
        .expect(1)
        .mount(&h.server)
        .await;
    let mut reg = example("authentication-token");
    reg["token"] = REG_TOKEN.into();
    Mock::given(method("POST"))
        .and(path(
            "/repos/octo-org/octo-repo/actions/runners/registration-token",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(reg))
        .expect(1)
        .mount(&h.server)
        .await;
    let mut jit = example("runner-jitconfig");
    jit["encoded_jit_config"] = JIT_CONFIG.into();
    Mock::given(method("POST"))
        .and(path(
            "/repos/octo-org/octo-repo/actions/runners/generate-jitconfig",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(jit))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/repos/octo-org/octo-repo/actions/runners/23"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "runner busy"})))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo-org/octo-repo/actions/runners/24"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;

    let auth = Auth::App {
        app_id: "123".into(),
        installation_id: 77,
        private_key_pem: SecretString::from(pem.clone()),
    };
    let config = h.config(Scope::repo("octo-org", "octo-repo"), auth);
    let client = GitHubClient::new(config.clone()).unwrap();
    let reg = client.registration_token().await.unwrap();
    let jit = client
        .generate_jit_config(&JitRequest::new("ghr-1", vec!["self-hosted".into()]))
        .await
        .unwrap();
    let busy = client.delete_runner(23).await.unwrap_err();
    let unauthorized = client.runner(24).await.unwrap_err();

    // The JWT actually sent, to search for it.
    let reqs = h.server.received_requests().await.unwrap();
    let jwt = reqs[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned();
    assert!(jwt.len() > 100);

    // A PAT config and its errors too.
    let pat = GitHubConfig {
        auth: Auth::Token(SecretString::from(common::TOKEN)),
        ..config.clone()
    };
    let pat_client = GitHubClient::new(pat.clone()).unwrap();
    let both = GitHubConfig::from_lookup(|k| match k {
        "GITHUB_TOKEN" => Some(common::TOKEN.into()),
        "GITHUB_APP_ID" => Some("1".into()),
        _ => None,
    })
    .unwrap_err();
    let rate = Error::RateLimited {
        until: std::time::SystemTime::now(),
        reason: "x".into(),
    };

    let renderings = [
        format!("{config:?}"),
        format!("{pat:?}"),
        format!("{client:?}"),
        format!("{pat_client:?}"),
        format!("{reg:?}"),
        format!("{jit:?}"),
        format!("{busy} {busy:?}"),
        format!("{unauthorized} {unauthorized:?}"),
        format!("{both} {both:?}"),
        format!("{rate} {rate:?}"),
        format!("{:?}", config.auth),
        format!("{:?}", SecretString::from(WEBHOOK_SECRET)),
    ];
    drop(_guard);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("GitHub request"),
        "the subscriber captured nothing:\n{logs}"
    );
    assert!(logs.contains("JIT runner registered"), "{logs}");

    let secrets = [
        ("installation token", INST_TOKEN.to_owned()),
        ("registration token", REG_TOKEN.to_owned()),
        ("JIT config", JIT_CONFIG.to_owned()),
        ("JWT", jwt.clone()),
        ("JWT signature", jwt.rsplit('.').next().unwrap().to_owned()),
        ("private key", pem_body_line),
        ("PAT", common::TOKEN.to_owned()),
        ("webhook secret", WEBHOOK_SECRET.to_owned()),
    ];
    for (what, secret) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{what} leaked into the logs"
        );
        for r in &renderings {
            assert!(!r.contains(secret.as_str()), "{what} leaked into {r}");
        }
    }
    assert!(renderings[0].contains("REDACTED") && renderings[4].contains("REDACTED"));
    h.finish().await;
}
