//! The HTTP layer: headers, auth, conditional requests, rate limits, retries, pagination, stats.
//!
//! Every request goes through [`GitHubClient::execute`], which is the one place where responses are turned into
//! [`Error`]s; the typed methods of [`crate::GitHubRunners`] sit on top (see `api.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use url::Url;

pub use reqwest::Method;

use crate::auth::{AuthState, CachedToken};
use crate::config::GitHubConfig;
use crate::error::{Error, Result, one_line};
use crate::types::RateLimitSnapshot;

/// REST API version sent with every request.
pub const API_VERSION: &str = "2022-11-28";
/// Media type sent as `Accept`.
pub const ACCEPT: &str = "application/vnd.github+json";
/// Entries kept in the ETag cache before the least recently used is evicted.
pub const ETAG_CACHE_CAPACITY: usize = 2048;
/// Safety bound on pages followed through `link: rel="next"`.
pub const MAX_PAGES: usize = 100;
/// Shortest pause after a secondary rate limit without `retry-after`.
pub const SECONDARY_LIMIT_MIN_BACKOFF: Duration = Duration::from_secs(60);
/// Longest pause after repeated secondary rate limits.
pub const SECONDARY_LIMIT_MAX_BACKOFF: Duration = Duration::from_secs(16 * 60);
/// Longest message taken from an answer into an [`Error`] (GitHub's `message`, a decoder's complaint).
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest pause a response header (`retry-after`, `x-ratelimit-reset`) can impose: a larger value is
/// clamped to this (GitHub's primary window is one hour), so a hostile or broken answer cannot stop the
/// client for longer nor overflow the clock arithmetic.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(3600);

/// One HTTP attempt, reported to a [`RequestObserver`] (metrics).
#[derive(Debug, Clone)]
pub struct RequestEvent {
    /// HTTP method.
    pub method: Method,
    /// Templated endpoint, e.g. `/repos/{owner}/{repo}/actions/runners`.
    pub endpoint: &'static str,
    /// HTTP status, `None` when no response arrived (transport error).
    pub status: Option<u16>,
    /// `true` for a 304 answer to `If-None-Match` (does not count against the primary rate limit).
    pub conditional_hit: bool,
    /// Time from sending to the end of the body.
    pub elapsed: Duration,
}

/// Receives one [`RequestEvent`] per HTTP attempt (including retries).
pub trait RequestObserver: Send + Sync {
    /// Called after each attempt.
    fn on_request(&self, ev: &RequestEvent);
}

/// Counters since the client was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP attempts sent (including retries and transport failures).
    pub requests: u64,
    /// 304 answers to conditional requests (free).
    pub conditional_hits: u64,
    /// Responses other than 304: the ones that count against the rate limit budget.
    pub budgeted_requests: u64,
    /// Responses that were a primary or secondary rate limit.
    pub rate_limited: u64,
}

/// Retries of 5xx answers and transport failures (short, in-client); rate limits are never slept on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the 2nd attempt; doubles each time, ±50 % jitter.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    conditional_hits: AtomicU64,
    budgeted: AtomicU64,
    rate_limited: AtomicU64,
}

struct CacheEntry {
    etag: String,
    body: Arc<[u8]>,
    last_used: u64,
}

#[derive(Default)]
struct EtagCache {
    entries: HashMap<String, CacheEntry>,
    tick: u64,
}

impl EtagCache {
    fn get(&mut self, key: &str) -> Option<(String, Arc<[u8]>)> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|e| {
            e.last_used = tick;
            (e.etag.clone(), e.body.clone())
        })
    }

    fn put(&mut self, key: String, etag: String, body: Arc<[u8]>) {
        self.tick += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= ETAG_CACHE_CAPACITY {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(
            key,
            CacheEntry {
                etag,
                body,
                last_used: self.tick,
            },
        );
    }
}

/// A decoded HTTP answer (2xx or a 304 replaced by the cached body).
pub(crate) struct Response {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Arc<[u8]>,
}

impl Response {
    pub(crate) fn json<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            endpoint,
            message: one_line(&e.to_string(), MAX_MESSAGE_CHARS),
        })
    }

    /// Like [`Self::json`] but the error carries only the position (the body holds a credential).
    pub(crate) fn json_sensitive<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            endpoint,
            message: format!(
                "unexpected JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }
}

/// How a request authenticates.
pub(crate) enum Credential<'a> {
    /// The configured credential (PAT or installation token).
    Default,
    /// An explicit bearer (the App JWT).
    Bearer(&'a SecretString),
}

/// The GitHub client. Build it with [`GitHubClient::new`]; share it behind an `Arc`.
pub struct GitHubClient {
    pub(crate) config: GitHubConfig,
    http: reqwest::Client,
    pub(crate) auth: AuthState,
    observer: Option<Arc<dyn RequestObserver>>,
    etags: Mutex<EtagCache>,
    counters: Counters,
    last_rate: Mutex<Option<RateLimitSnapshot>>,
    blocked: Mutex<Option<(SystemTime, String)>>,
    secondary_strikes: AtomicU32,
    retry: RetryPolicy,
    pub(crate) repositories: Vec<String>,
    pub(crate) jobs_concurrency: usize,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_url", &self.config.api_url.as_str())
            .field("scope", &self.config.scope)
            .field("auth", &self.auth)
            .field("repositories", &self.repositories)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl GitHubClient {
    /// Builds a client (parses the App key now, so a bad key fails early).
    pub fn new(config: GitHubConfig) -> Result<Self> {
        config.validate()?;
        let auth = AuthState::from_config(&config.auth)?;
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            config,
            http,
            auth,
            observer: None,
            etags: Mutex::new(EtagCache::default()),
            counters: Counters::default(),
            last_rate: Mutex::new(None),
            blocked: Mutex::new(None),
            secondary_strikes: AtomicU32::new(0),
            retry: RetryPolicy::default(),
            repositories: Vec::new(),
            jobs_concurrency: 6,
        })
    }

    /// Reports every HTTP attempt to `observer` (e.g. Prometheus counters).
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Replaces the 5xx/transport retry policy (tests use tiny delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// Organisation scope only: the repositories whose queued jobs [`crate::GitHubRunners::queued_jobs`]
    /// polls (`name` or `org/name`). GitHub has no org-wide workflow-runs endpoint.
    pub fn with_repositories<I, S>(mut self, repositories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.repositories = repositories.into_iter().map(Into::into).collect();
        self
    }

    /// How many runs' job lists are fetched at once (default 6, at least 1).
    pub fn with_jobs_concurrency(mut self, n: usize) -> Self {
        self.jobs_concurrency = n.max(1);
        self
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &GitHubConfig {
        &self.config
    }

    /// Counters since construction.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            conditional_hits: self.counters.conditional_hits.load(Ordering::Relaxed),
            budgeted_requests: self.counters.budgeted.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// The `x-ratelimit-*` headers of the last response that carried them.
    pub fn rate_limit_snapshot(&self) -> Option<RateLimitSnapshot> {
        lock(&self.last_rate).clone()
    }

    /// If a rate limit is in force: the time before which this client refuses to send.
    pub fn rate_limited_until(&self) -> Option<SystemTime> {
        lock(&self.blocked)
            .as_ref()
            .map(|(t, _)| *t)
            .filter(|t| *t > SystemTime::now())
    }

    /// Builds `api_url` + path segments (percent-encoded) + query.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.config.api_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one logical request (with 5xx retries) and maps errors. `GET`s are conditional.
    pub(crate) async fn execute(
        &self,
        method: Method,
        endpoint: &'static str,
        url: Url,
        body: Option<&serde_json::Value>,
        credential: Credential<'_>,
    ) -> Result<Response> {
        if let Some(err) = self.blocked_error() {
            return Err(err);
        }
        let bearer = match credential {
            Credential::Bearer(b) => b.clone(),
            Credential::Default => self.bearer().await?,
        };
        let is_get = method == Method::GET;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let cached = if is_get {
                lock(&self.etags).get(url.as_str())
            } else {
                None
            };
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(header::ACCEPT, ACCEPT)
                .header("X-GitHub-Api-Version", API_VERSION)
                .header(header::AUTHORIZATION, auth_header(&bearer)?);
            if let Some((etag, _)) = &cached {
                req = req.header(header::IF_NONE_MATCH, etag.as_str());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = Instant::now();
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let sent = req.send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.observe(&method, endpoint, None, false, started.elapsed());
                    // A POST is only retried when it certainly never reached GitHub.
                    let resend_ok = method != Method::POST || e.is_connect();
                    if resend_ok && attempt < self.retry.max_attempts {
                        tracing::warn!(%method, endpoint, attempt, error = %e, "GitHub request failed, retrying");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        endpoint,
                        message: error_chain(e.without_url()),
                    });
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            self.record_rate_headers(&headers);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    self.observe(&method, endpoint, Some(status), false, started.elapsed());
                    if attempt < self.retry.max_attempts && method != Method::POST {
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        endpoint,
                        message: error_chain(e.without_url()),
                    });
                }
            };
            let elapsed = started.elapsed();

            if status == 304
                && let Some((_, cached_body)) = cached
            {
                self.counters
                    .conditional_hits
                    .fetch_add(1, Ordering::Relaxed);
                self.observe(&method, endpoint, Some(304), true, elapsed);
                tracing::debug!(%method, endpoint, status, elapsed_ms = elapsed.as_millis() as u64, "GitHub 304");
                return Ok(Response {
                    headers,
                    body: cached_body,
                });
            }
            self.counters.budgeted.fetch_add(1, Ordering::Relaxed);
            self.observe(&method, endpoint, Some(status), false, elapsed);
            tracing::debug!(%method, endpoint, status, elapsed_ms = elapsed.as_millis() as u64, "GitHub request");

            if (200..300).contains(&status) {
                self.secondary_strikes.store(0, Ordering::Relaxed);
                let body: Arc<[u8]> = Arc::from(bytes.as_ref());
                if is_get
                    && let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
                {
                    lock(&self.etags).put(url.to_string(), etag.to_owned(), body.clone());
                }
                return Ok(Response { headers, body });
            }

            let message = error_message(&bytes, status);
            if let Some((until, reason)) = self.rate_limit_verdict(status, &headers, &message) {
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%method, endpoint, status, reason = %reason, until = unix(until), "GitHub rate limit");
                *lock(&self.blocked) = Some((until, reason.clone()));
                return Err(Error::RateLimited { until, reason });
            }
            if status >= 500 && attempt < self.retry.max_attempts {
                tracing::warn!(%method, endpoint, status, attempt, "GitHub server error, retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            if status == 401 {
                if let AuthState::App(app) = &self.auth {
                    *app.cached.lock().await = None;
                }
                return Err(Error::Auth(format!("401 from {endpoint}: {message}")));
            }
            if status == 404 {
                return Err(Error::NotFound { endpoint });
            }
            return Err(Error::Api {
                status,
                endpoint,
                message,
            });
        }
    }

    /// GET every page of a paginated list, following `link: rel="next"` (same origin only).
    pub(crate) async fn get_pages<P: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        first: Url,
    ) -> Result<Vec<P>> {
        let mut pages = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            if pages.len() >= MAX_PAGES {
                return Err(Error::Decode {
                    endpoint,
                    message: format!("more than {MAX_PAGES} pages"),
                });
            }
            let resp = self
                .execute(Method::GET, endpoint, url, None, Credential::Default)
                .await?;
            pages.push(resp.json::<P>(endpoint)?);
            if let Some(link) = resp.headers.get(header::LINK).and_then(|v| v.to_str().ok())
                && let Some(raw) = next_link(link)
            {
                let url = Url::parse(&raw).map_err(|e| Error::Decode {
                    endpoint,
                    message: format!("bad link URL {raw:?}: {e}"),
                })?;
                if url.origin() != self.config.api_url.origin() {
                    return Err(Error::Decode {
                        endpoint,
                        message: format!("link rel=next points to another origin: {raw:?}"),
                    });
                }
                next = Some(url);
            }
        }
        Ok(pages)
    }

    /// The bearer for [`Credential::Default`]: the PAT, or a (cached) installation access token.
    async fn bearer(&self) -> Result<SecretString> {
        let app = match &self.auth {
            AuthState::Token(t) => return Ok(t.clone()),
            AuthState::App(app) => app,
        };
        let mut cached = app.cached.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_ref().filter(|c| c.is_fresh(now)) {
            return Ok(c.token.clone());
        }
        let jwt = app.jwt(now)?;
        let id = app.installation_id.to_string();
        let url = self.url(&["app", "installations", &id, "access_tokens"], &[]);
        const EP: &str = "/app/installations/{installation_id}/access_tokens";
        let resp =
            Box::pin(self.execute(Method::POST, EP, url, None, Credential::Bearer(&jwt))).await?;
        #[derive(Deserialize)]
        struct Tok {
            token: SecretString,
            #[serde(with = "time::serde::rfc3339")]
            expires_at: OffsetDateTime,
        }
        let tok: Tok = resp.json_sensitive(EP)?;
        tracing::debug!(installation_id = app.installation_id, expires_at = %tok.expires_at, "new installation token");
        *cached = Some(CachedToken {
            token: tok.token.clone(),
            expires_at: tok.expires_at,
        });
        Ok(tok.token)
    }

    fn blocked_error(&self) -> Option<Error> {
        let mut blocked = lock(&self.blocked);
        match blocked.as_ref() {
            Some((until, reason)) if *until > SystemTime::now() => Some(Error::RateLimited {
                until: *until,
                reason: format!("still paused: {reason}"),
            }),
            Some(_) => {
                *blocked = None;
                None
            }
            None => None,
        }
    }

    fn rate_limit_verdict(
        &self,
        status: u16,
        headers: &HeaderMap,
        message: &str,
    ) -> Option<(SystemTime, String)> {
        if status != 403 && status != 429 {
            return None;
        }
        let now = SystemTime::now();
        if let Some(secs) = header_u64(headers, "retry-after") {
            return Some((
                pause_until(now, Duration::from_secs(secs)),
                format!("{status} with retry-after: {secs}"),
            ));
        }
        if header_u64(headers, "x-ratelimit-remaining") == Some(0)
            && let Some(reset) = header_u64(headers, "x-ratelimit-reset")
        {
            let wait = UNIX_EPOCH
                .checked_add(Duration::from_secs(reset))
                .map_or(MAX_RATE_LIMIT_PAUSE, |at| {
                    at.duration_since(now).unwrap_or_default()
                });
            return Some((
                pause_until(now, wait),
                format!("{status} with x-ratelimit-remaining: 0, reset {reset}"),
            ));
        }
        let lower = message.to_ascii_lowercase();
        if status == 429
            || lower.contains("rate limit")
            || header_u64(headers, "x-ratelimit-remaining") == Some(0)
        {
            let strikes = self
                .secondary_strikes
                .fetch_add(1, Ordering::Relaxed)
                .min(10);
            let wait = SECONDARY_LIMIT_MIN_BACKOFF
                .saturating_mul(1 << strikes)
                .min(SECONDARY_LIMIT_MAX_BACKOFF);
            return Some((
                pause_until(now, wait),
                format!(
                    "{status} secondary rate limit, backing off {}s",
                    wait.as_secs()
                ),
            ));
        }
        None
    }

    fn record_rate_headers(&self, headers: &HeaderMap) {
        let (Some(limit), Some(remaining), Some(reset)) = (
            header_u64(headers, "x-ratelimit-limit"),
            header_u64(headers, "x-ratelimit-remaining"),
            header_u64(headers, "x-ratelimit-reset"),
        ) else {
            return;
        };
        let snap = RateLimitSnapshot {
            limit,
            remaining,
            used: header_u64(headers, "x-ratelimit-used")
                .unwrap_or(limit.saturating_sub(remaining)),
            reset,
            resource: headers
                .get("x-ratelimit-resource")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("core")
                .to_owned(),
        };
        *lock(&self.last_rate) = Some(snap);
    }

    fn observe(
        &self,
        method: &Method,
        endpoint: &'static str,
        status: Option<u16>,
        hit: bool,
        elapsed: Duration,
    ) {
        if let Some(o) = &self.observer {
            o.on_request(&RequestEvent {
                method: method.clone(),
                endpoint,
                status,
                conditional_hit: hit,
                elapsed,
            });
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.retry.max_delay);
        let jitter: f64 = rand::random_range(0.5..1.5);
        capped.mul_f64(jitter)
    }
}

fn auth_header(bearer: &SecretString) -> Result<HeaderValue> {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {}", bearer.expose_secret())).map_err(|_| {
            Error::Auth(
                "the credential contains characters not allowed in an HTTP header".to_owned(),
            )
        })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The error and its sources, `: `-joined (reqwest's top-level message alone is vague), on one line.
fn error_chain(e: reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    one_line(&msg, MAX_MESSAGE_CHARS)
}

/// `now + wait`, the wait clamped to [`MAX_RATE_LIMIT_PAUSE`] (checked: never panics).
fn pause_until(now: SystemTime, wait: Duration) -> SystemTime {
    now.checked_add(wait.min(MAX_RATE_LIMIT_PAUSE))
        .unwrap_or(now)
}

/// A header as a non-negative integer; `None` when absent, not text or not a `u64`.
pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn error_message(body: &[u8], status: u16) -> String {
    #[derive(Deserialize)]
    struct E {
        message: Option<String>,
    }
    serde_json::from_slice::<E>(body)
        .ok()
        .and_then(|e| e.message)
        .map(|m| one_line(&m, MAX_MESSAGE_CHARS))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("unknown status")
                .to_owned()
        })
}

/// Extracts the `rel="next"` URL of a `link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| {
                    v.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .unwrap_or(false)
        });
        if is_next {
            target
                .strip_prefix('<')?
                .strip_suffix('>')
                .map(str::to_owned)
        } else {
            None
        }
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_header_next() {
        let l = r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        let l = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(l), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn etag_cache_evicts_least_recently_used() {
        let mut c = EtagCache::default();
        for i in 0..ETAG_CACHE_CAPACITY {
            c.put(format!("k{i}"), "e".into(), Arc::from(&b"x"[..]));
        }
        assert!(c.get("k0").is_some()); // k0 is now recent, k1 the oldest
        c.put("new".into(), "e".into(), Arc::from(&b"y"[..]));
        assert_eq!(c.entries.len(), ETAG_CACHE_CAPACITY);
        assert!(c.get("k1").is_none());
        assert!(c.get("k0").is_some() && c.get("new").is_some());
    }

    #[test]
    fn secondary_backoff_grows() {
        let c = GitHubClient::new(crate::GitHubConfig::new(
            crate::Scope::repo("o", "r"),
            crate::Auth::Token(SecretString::from("t")),
        ))
        .unwrap();
        let now = SystemTime::now();
        let secs = |h: &HeaderMap| {
            let (until, _) = c
                .rate_limit_verdict(403, h, "You have exceeded a secondary rate limit")
                .unwrap();
            until.duration_since(now).unwrap().as_secs()
        };
        let empty = HeaderMap::new();
        let waits: Vec<u64> = (0..7).map(|_| secs(&empty)).collect();
        assert!(waits[0] >= 60 && waits[0] <= 61, "{waits:?}");
        assert!(
            waits[1] >= 120 && waits[2] >= 240 && waits[3] >= 480,
            "{waits:?}"
        );
        assert!(
            waits[6] <= SECONDARY_LIMIT_MAX_BACKOFF.as_secs() + 1,
            "{waits:?}"
        );
        // A success resets the strikes (done in execute); a 429 without headers is a secondary limit too.
        c.secondary_strikes.store(0, Ordering::Relaxed);
        let (until, _) = c.rate_limit_verdict(429, &empty, "").unwrap();
        assert!(until.duration_since(now).unwrap().as_secs() >= 60);
        assert!(
            c.rate_limit_verdict(403, &empty, "Must have admin rights")
                .is_none()
        );
        assert!(c.rate_limit_verdict(404, &empty, "rate limit").is_none());
    }

    fn test_client() -> GitHubClient {
        GitHubClient::new(crate::GitHubConfig::new(
            crate::Scope::repo("o", "r"),
            crate::Auth::Token(SecretString::from("t")),
        ))
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn huge_retry_after_and_reset_are_clamped_to_an_hour() {
        let c = test_client();
        let max = u64::MAX.to_string();
        let far = (unix(SystemTime::now()) + 30 * 86_400).to_string();
        for h in [
            headers(&[("retry-after", &max)]),
            headers(&[("retry-after", "86400")]),
            headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &max)]),
            headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &far)]),
        ] {
            let before = SystemTime::now();
            let (until, reason) = c.rate_limit_verdict(403, &h, "").unwrap();
            let wait = until.duration_since(before).unwrap();
            assert!(
                wait <= MAX_RATE_LIMIT_PAUSE + Duration::from_secs(1)
                    && wait >= MAX_RATE_LIMIT_PAUSE - Duration::from_secs(1),
                "{h:?}: {wait:?} ({reason})"
            );
        }
        // A small retry-after is kept as is; a reset in the past means no pause.
        let (until, _) = c
            .rate_limit_verdict(429, &headers(&[("retry-after", "5")]), "")
            .unwrap();
        assert!(until.duration_since(SystemTime::now()).unwrap() <= Duration::from_secs(5));
        let (until, _) = c
            .rate_limit_verdict(
                403,
                &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]),
                "",
            )
            .unwrap();
        assert!(until <= SystemTime::now());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the rate-limit headers say, reading them never panics and never pauses for more than
        /// [`MAX_RATE_LIMIT_PAUSE`].
        #[test]
        fn rate_limit_headers_never_panic_nor_pause_too_long(
            status in prop_oneof![Just(403u16), Just(429u16), 100u16..600],
            values in prop::collection::vec(
                prop::option::of(prop_oneof![
                    any::<u64>().prop_map(|n| n.to_string()),
                    (0u64..5_000_000_000).prop_map(|n| n.to_string()),
                    Just("0".to_owned()),
                    "[ -~]{0,24}",
                    "-?[0-9]{1,30}(\\.[0-9]{0,3})?",
                ]),
                6,
            ),
            message in "(.|rate limit){0,40}",
        ) {
            let names = [
                "retry-after",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "x-ratelimit-limit",
                "x-ratelimit-used",
                "x-ratelimit-resource",
            ];
            let mut h = HeaderMap::new();
            for (name, value) in names.iter().zip(&values) {
                if let Some(v) = value
                    && let Ok(v) = HeaderValue::from_str(v)
                {
                    h.insert(*name, v);
                }
            }
            static CLIENT: std::sync::OnceLock<GitHubClient> = std::sync::OnceLock::new();
            let c = CLIENT.get_or_init(test_client);
            c.record_rate_headers(&h);
            let before = SystemTime::now();
            if let Some((until, reason)) = c.rate_limit_verdict(status, &h, &message) {
                let wait = until.duration_since(before).unwrap_or_default();
                prop_assert!(wait <= MAX_RATE_LIMIT_PAUSE + Duration::from_secs(1), "{wait:?}");
                prop_assert_eq!(reason.lines().count(), 1);
            }
        }

        /// A GitHub error body of any shape gives a one-line message.
        #[test]
        fn error_messages_are_one_line(body in prop::collection::vec(any::<u8>(), 0..200), message in "\\PC*(\n\\PC*){0,3}", status in 100u16..600) {
            prop_assert_eq!(error_message(&body, status).lines().count(), 1);
            let json = serde_json::json!({ "message": message }).to_string();
            prop_assert!(error_message(json.as_bytes(), status).lines().count() <= 1);
        }
    }

    #[test]
    fn error_message_prefers_body_message() {
        assert_eq!(
            error_message(br#"{"message":"Bad credentials"}"#, 401),
            "Bad credentials"
        );
        assert_eq!(error_message(b"<html>", 502), "Bad Gateway");
    }
}
