//! The HTTP layer: the one place that sends requests, decodes the `{"data": …}` envelope and maps
//! errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::config::{ProxmoxConfig, check_base_url, check_token_id};
use crate::error::Error;

/// One HTTP attempt, reported to a [`RequestObserver`] (metrics, per-job API call counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEvent {
    /// HTTP method.
    pub method: Method,
    /// Templated endpoint, e.g. `/nodes/{node}/qemu/{vmid}/clone` (bounded cardinality).
    pub endpoint: &'static str,
    /// HTTP status, `None` when the request failed in transport.
    pub status: Option<u16>,
    /// Time from sending to the end of the answer's body.
    pub elapsed: Duration,
}

/// Observes every HTTP attempt the client makes (called once per attempt, after it finished).
pub trait RequestObserver: Send + Sync {
    /// Called once per HTTP attempt.
    fn on_request(&self, event: &RequestEvent);
}

/// The Proxmox VE API client. Cheap to clone (shares the connection pool).
///
/// Implements [`crate::ProxmoxApi`]; build it with [`ProxmoxClient::new`].
#[derive(Clone)]
pub struct ProxmoxClient {
    http: reqwest::Client,
    base_url: Url,
    token_id: String,
    /// `PVEAPIToken=…`, marked sensitive (its `Debug` prints `Sensitive`).
    auth: HeaderValue,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base_url", &self.base_url.as_str())
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Builds the `Authorization` header value — the only place the token secret is exposed.
fn auth_header(config: &ProxmoxConfig) -> Result<HeaderValue, Error> {
    let secret = config.token_secret.expose_secret();
    if secret.is_empty() {
        return Err(Error::InvalidConfig {
            field: "token_secret".into(),
            value: String::new(),
            reason: "empty".into(),
        });
    }
    let mut value = HeaderValue::from_str(&format!("PVEAPIToken={}={}", config.token_id, secret))
        .map_err(|_| Error::InvalidConfig {
        field: "token_secret".into(),
        value: "<redacted>".into(),
        reason: "contains characters not allowed in an HTTP header".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl ProxmoxClient {
    /// Builds a client. Fails on an invalid URL or token id, an unreadable CA file, or a TLS setup
    /// error. With [`crate::TlsMode::Insecure`] a warning is logged.
    pub fn new(config: ProxmoxConfig) -> Result<Self, Error> {
        check_base_url(&config.base_url).map_err(|reason| Error::InvalidConfig {
            field: "base_url".into(),
            value: config.base_url.to_string(),
            reason,
        })?;
        check_token_id(&config.token_id).map_err(|reason| Error::InvalidConfig {
            field: "token_id".into(),
            value: config.token_id.clone(),
            reason,
        })?;
        let auth = auth_header(&config)?;
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("proxmox-api-rs/", env!("CARGO_PKG_VERSION")));
        let builder = crate::tls::configure(builder, &config.tls)?;
        let http = builder.build().map_err(|e| Error::InvalidConfig {
            field: "tls".into(),
            value: format!("{:?}", config.tls),
            reason: format!("cannot build HTTP client: {e}"),
        })?;
        Ok(ProxmoxClient {
            http,
            base_url: config.base_url,
            token_id: config.token_id,
            auth,
            observer: None,
        })
    }

    /// Reports every HTTP attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The concrete URL of `endpoint` with its `{…}` segments replaced by `params`, in order.
    fn url(&self, endpoint: &'static str, params: &[&str]) -> Result<Url, Error> {
        let mut url = self.base_url.clone();
        let mut params = params.iter();
        {
            let mut segs = url.path_segments_mut().map_err(|()| Error::InvalidConfig {
                field: "base_url".into(),
                value: self.base_url.to_string(),
                reason: "cannot be a base URL".into(),
            })?;
            segs.pop_if_empty();
            for seg in endpoint.split('/').filter(|s| !s.is_empty()) {
                if seg.starts_with('{') {
                    let value = params.next().ok_or_else(|| Error::InvalidValue {
                        what: "path parameter",
                        value: seg.to_owned(),
                        reason: format!("missing for {endpoint}"),
                    })?;
                    if value.is_empty() {
                        return Err(Error::InvalidValue {
                            what: "path parameter",
                            value: seg.to_owned(),
                            reason: format!("empty for {endpoint}"),
                        });
                    }
                    segs.push(value);
                } else {
                    segs.push(seg);
                }
            }
        }
        Ok(url)
    }

    fn observe(
        &self,
        method: &Method,
        endpoint: &'static str,
        status: Option<u16>,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        tracing::debug!(%method, endpoint, ?status, ?elapsed, "proxmox request");
        if let Some(obs) = &self.observer {
            obs.on_request(&RequestEvent {
                method: method.clone(),
                endpoint,
                status,
                elapsed,
            });
        }
    }

    /// Sends one request and decodes the `data` member of the answer into `T`.
    ///
    /// `query` goes to the URL, `form` (if any) to an `application/x-www-form-urlencoded` body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &'static str,
        params: &[&str],
        query: &[(&'static str, String)],
        form: Option<&[(&'static str, String)]>,
    ) -> Result<T, Error> {
        let method_name = method_str(&method);
        let url = self.url(endpoint, params)?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.auth.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let started = Instant::now();
        let transport = |source| Error::Transport {
            method: method_name,
            endpoint,
            source,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observe(&method, endpoint, None, started);
                return Err(transport(e));
            }
        };
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_owned))
            .or_else(|| status.canonical_reason().map(str::to_owned));
        let body = resp.bytes().await;
        self.observe(&method, endpoint, Some(status.as_u16()), started);
        let body = body.map_err(transport)?;

        if !status.is_success() {
            return Err(api_error(
                method_name,
                endpoint,
                status.as_u16(),
                reason,
                &body,
            ));
        }
        decode_envelope(method_name, endpoint, &body)
    }
}

/// Decodes the `data` member of a success answer's body into `T`.
fn decode_envelope<T: DeserializeOwned>(
    method: &'static str,
    endpoint: &'static str,
    body: &[u8],
) -> Result<T, Error> {
    let decode = |message: String| Error::Decode {
        method,
        endpoint,
        message,
    };
    let mut envelope: Value =
        serde_json::from_slice(body).map_err(|e| decode(format!("invalid JSON: {e}")))?;
    let data = match envelope.get_mut("data") {
        Some(d) => d.take(),
        None => return Err(decode("no `data` member in the answer".into())),
    };
    serde_json::from_value(data).map_err(|e| decode(e.to_string()))
}

fn method_str(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// Maps an error answer: message from the body's `message` (trimmed), else the reason phrase;
/// `errors` from the body's `errors` object.
fn api_error(
    method: &'static str,
    endpoint: &'static str,
    status: u16,
    reason: Option<String>,
    body: &[u8],
) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let body_message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    let errors: BTreeMap<String, String> = json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.trim().to_owned(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    let message = body_message
        .or_else(|| {
            reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    Error::Api {
        method,
        endpoint,
        status,
        message,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn client(base: &str) -> ProxmoxClient {
        let cfg = ProxmoxConfig::new(
            Url::parse(base).unwrap(),
            "root@pam!ci",
            SecretString::from("TOPSECRET-1234".to_owned()),
        );
        ProxmoxClient::new(cfg).unwrap()
    }

    #[test]
    fn url_templating_with_and_without_trailing_slash() {
        for base in [
            "http://127.0.0.1:1/api2/json",
            "http://127.0.0.1:1/api2/json/",
        ] {
            let c = client(base);
            let u = c
                .url("/nodes/{node}/qemu/{vmid}/clone", &["pve1", "9000"])
                .unwrap();
            assert_eq!(
                u.as_str(),
                "http://127.0.0.1:1/api2/json/nodes/pve1/qemu/9000/clone"
            );
        }
        let c = client("http://127.0.0.1:1/api2/json");
        let u = c
            .url(
                "/nodes/{node}/tasks/{upid}/status",
                &[
                    "pve1",
                    "UPID:pve1:00000001:00000002:00000003:qmstart:100:root@pam!ci:",
                ],
            )
            .unwrap();
        assert_eq!(
            u.path(),
            "/api2/json/nodes/pve1/tasks/UPID:pve1:00000001:00000002:00000003:qmstart:100:root@pam!ci:/status"
        );
        assert!(c.url("/nodes/{node}", &[]).is_err());
        assert!(c.url("/nodes/{node}", &[""]).is_err());
        // A '/' inside a parameter is escaped, never a new segment.
        let u = c.url("/storage/{storage}", &["a/b"]).unwrap();
        assert_eq!(u.path(), "/api2/json/storage/a%2Fb");
    }

    #[test]
    fn debug_never_shows_secret() {
        let c = client("http://127.0.0.1:1/api2/json");
        let dbg = format!("{c:?} {c:#?} {:?}", c.auth);
        assert!(!dbg.contains("TOPSECRET"), "{dbg}");
    }

    #[test]
    fn new_rejects_bad_token_id_naming_it() {
        let cfg = ProxmoxConfig::new(
            Url::parse("http://127.0.0.1:1/api2/json").unwrap(),
            "root",
            SecretString::from("TOPSECRET".to_owned()),
        );
        let e = ProxmoxClient::new(cfg).unwrap_err().to_string();
        assert!(e.contains("token_id") && e.contains("root"), "{e}");
        assert!(!e.contains("TOPSECRET"));
        let cfg = ProxmoxConfig::new(
            Url::parse("http://127.0.0.1:1/api2/json").unwrap(),
            "root@pam!x",
            SecretString::from("TOP\nSECRET".to_owned()),
        );
        let e = ProxmoxClient::new(cfg).unwrap_err().to_string();
        assert!(e.contains("token_secret") && !e.contains("TOP"), "{e}");
    }

    mod arbitrary {
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::super::*;
        use crate::types::{
            ClusterVm, NodeInfo, NodeVm, Permissions, StorageConfig, TaskListEntry, TaskStatus,
            Upid, Version, VmConfig, VmStatus,
        };

        /// A scalar: null, booleans, extreme numbers, numbers as strings, short text.
        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<u64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                any::<u64>().prop_map(|n| Value::String(n.to_string())),
                Just(Value::String("1e400".into())),
                Just(Value::String("-1".into())),
                Just(Value::String("running".into())),
                "\\PC{0,16}".prop_map(Value::String),
                "[a-z0-9_;,. -]{0,20}".prop_map(Value::String),
            ]
        }

        /// Any JSON value, a few levels deep.
        fn value() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// `template` with each member kept, dropped or replaced by an arbitrary value.
        fn mutated(template: Value) -> impl Strategy<Value = Value> {
            let keys: Vec<String> = template
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let n = keys.len();
            (
                prop::collection::vec(
                    prop_oneof![4 => Just(None), 1 => Just(Some(Value::Null)), 3 => value().prop_map(Some)],
                    n,
                ),
                prop::collection::vec(any::<bool>(), n),
            )
                .prop_map(move |(replace, drop)| {
                    let mut out: Map<String, Value> =
                        template.as_object().cloned().unwrap_or_default();
                    for ((key, new), gone) in keys.iter().zip(replace).zip(drop) {
                        match new {
                            Some(v) => {
                                out.insert(key.clone(), v);
                            }
                            None if gone => {
                                out.remove(key);
                            }
                            None => {}
                        }
                    }
                    Value::Object(out)
                })
        }

        const UPID: &str =
            "UPID:pve1:0000A1B2:0001C3D4:65F0A1B2:qmclone:9000:dispatcher@pve!runners:";

        fn cluster_vm() -> Value {
            json!({"type": "qemu", "vmid": 201, "node": "pve1", "name": "ghr-201", "status": "running",
                   "template": 0, "tags": "ghr;ghr-pool-linux", "lock": "clone", "uptime": 12,
                   "mem": 1, "maxmem": 2, "pool": "ci", "hastate": "started"})
        }

        fn vm_status() -> Value {
            json!({"status": "running", "qmpstatus": "running", "lock": null, "uptime": "42", "agent": 1,
                   "name": "ghr-201", "tags": "ghr", "template": "0", "vmid": 201, "pid": 1234})
        }

        fn task_status() -> Value {
            json!({"status": "stopped", "exitstatus": "OK", "upid": UPID, "node": "pve1",
                   "type": "qmclone", "id": 9000, "user": "dispatcher@pve", "starttime": 1_716_580_365u64})
        }

        fn task_entry() -> Value {
            json!({"upid": UPID, "node": "pve1", "type": "qmclone", "id": "9000", "user": "dispatcher@pve",
                   "tokenid": "runners", "starttime": 1, "endtime": 2, "status": "OK", "pid": 3, "pstart": 4})
        }

        /// Decodes `{"data": data}` as `T`; an error must be one line.
        fn check<T: serde::de::DeserializeOwned>(data: &Value) -> Result<(), TestCaseError> {
            let body = json!({ "data": data }).to_string();
            if let Err(e) = decode_envelope::<T>("GET", "/x", body.as_bytes()) {
                let text = e.to_string();
                prop_assert_eq!(text.lines().count(), 1, "{}", text);
            }
            Ok(())
        }

        /// Every decoder of Proxmox answers on `data`.
        fn check_all(data: &Value) -> Result<(), TestCaseError> {
            check::<ClusterVm>(data)?;
            check::<Vec<ClusterVm>>(data)?;
            check::<VmStatus>(data)?;
            check::<TaskStatus>(data)?;
            check::<TaskListEntry>(data)?;
            check::<Vec<TaskListEntry>>(data)?;
            check::<VmConfig>(data)?;
            check::<NodeInfo>(data)?;
            check::<NodeVm>(data)?;
            check::<StorageConfig>(data)?;
            check::<Permissions>(data)?;
            check::<Version>(data)?;
            check::<Upid>(data)?;
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_answers_decode_or_fail_on_one_line(data in value()) {
                check_all(&data)?;
            }

            #[test]
            fn near_valid_answers_decode_or_fail_on_one_line(
                vm in mutated(cluster_vm()),
                status in mutated(vm_status()),
                task in mutated(task_status()),
                entries in prop::collection::vec(mutated(task_entry()), 0..8),
            ) {
                check_all(&vm)?;
                check::<Vec<ClusterVm>>(&Value::Array(vec![vm.clone(), cluster_vm()]))?;
                check_all(&status)?;
                check_all(&task)?;
                check::<Vec<TaskListEntry>>(&Value::Array(entries))?;
            }

            #[test]
            fn arbitrary_bodies_decode_or_fail_on_one_line(body in prop::collection::vec(any::<u8>(), 0..200)) {
                if let Err(e) = decode_envelope::<Value>("GET", "/x", &body) {
                    prop_assert_eq!(e.to_string().lines().count(), 1);
                }
            }

            #[test]
            fn upids_of_any_shape_parse_or_fail_on_one_line(
                raw in "\\PC{0,80}",
                fields in prop::collection::vec("[0-9A-Fa-f]{0,20}|\\PC{0,6}", 8),
            ) {
                let near = format!("UPID:{}:", fields.join(":"));
                for s in [raw.as_str(), near.as_str()] {
                    match s.parse::<Upid>() {
                        Ok(u) => {
                            let _ = (u.node(), u.pid(), u.pstart(), u.starttime(), u.task_type(), u.id(), u.user());
                        }
                        Err(e) => prop_assert_eq!(e.to_string().lines().count(), 1),
                    }
                }
            }
        }
    }

    #[test]
    fn api_error_mapping() {
        let e = api_error(
            "POST",
            "/x",
            400,
            Some("Parameter verification failed.".into()),
            br#"{"data":null,"errors":{"newid":"value must be at least 100\n"},"message":"Parameter verification failed.\n"}"#,
        );
        match &e {
            Error::Api {
                status,
                message,
                errors,
                ..
            } => {
                assert_eq!(*status, 400);
                assert_eq!(message, "Parameter verification failed.");
                assert_eq!(
                    errors.get("newid").map(String::as_str),
                    Some("value must be at least 100")
                );
            }
            other => panic!("{other:?}"),
        }
        let e = api_error("GET", "/x", 500, Some("boom from reason".into()), b"");
        assert!(matches!(&e, Error::Api { message, .. } if message == "boom from reason"));
        let e = api_error("GET", "/x", 596, None, b"not json");
        assert!(matches!(&e, Error::Api { message, .. } if message == "HTTP 596"));
    }
}
