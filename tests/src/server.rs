//! Serving an axum router on 127.0.0.1 with stop / restart on the same port (connection refused in between).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;

/// One listening server.
#[derive(Debug)]
pub(crate) struct ServerSlot {
    pub addr: SocketAddr,
    router: Router,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl ServerSlot {
    /// Binds a random port on 127.0.0.1 and serves.
    pub async fn start(router: Router) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let mut slot = Self {
            addr,
            router,
            running: None,
        };
        slot.serve(listener);
        Ok(slot)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let router = self.router.clone();
        let join = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, join));
    }

    /// Stops listening (open connections are closed after their in-flight request, at most 1 s).
    pub async fn stop(&mut self) {
        if let Some((tx, mut join)) = self.running.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(1), &mut join)
                .await
                .is_err()
            {
                join.abort();
            }
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> Result<(), Error> {
        if self.running.is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.serve(l);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(Error::Bind(
            last.unwrap_or_else(|| std::io::Error::other("rebind failed")),
        ))
    }
}

/// Sets the HTTP/1 reason phrase of a response (PVE puts its error message there).
pub(crate) fn set_reason(resp: &mut Response, reason: &str) {
    let clean: String = reason
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c == '\t' || (' '..='~').contains(c))
        .take(200)
        .collect();
    if clean.is_empty() {
        return;
    }
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(clean.into_bytes()) {
        resp.extensions_mut().insert(r);
    }
}
