//! Serving the router on a listener (SEC-9): HTTP/1 with a deadline for a request's headers,
//! so a connection that opens and never finishes its request is closed instead of holding a
//! file descriptor for ever; each request carries its peer's address (`ConnectInfo`) for the
//! client-address limits. On shutdown, no new connection is taken and those in flight finish
//! (for at most the request timeout).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a listener bounds its connections.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// A connection whose request headers take longer is closed.
    pub header_timeout: Duration,
    /// Open connections from one peer; more are closed at once (a client holding half-sent
    /// requests cannot use up the process's file descriptors).
    pub connections_per_peer: usize,
    /// Peers not held to `connections_per_peer`: the trusted proxies, whose connections carry
    /// many clients.
    pub unbounded_peers: Vec<std::net::IpAddr>,
    /// How long connections in flight may finish at shutdown.
    pub drain: Duration,
}

/// Open connections per peer address, and the place of one of them (given back on drop).
#[derive(Default, Clone)]
struct Peers(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

struct PeerPlace(Peers, Option<std::net::IpAddr>);

impl Peers {
    fn take(&self, peer: std::net::IpAddr, bounds: &Bounds) -> Option<PeerPlace> {
        if bounds.unbounded_peers.contains(&peer) {
            return Some(PeerPlace(self.clone(), None));
        }
        let mut map = self.0.lock().ok()?;
        let open = map.entry(peer).or_default();
        if *open >= bounds.connections_per_peer {
            return None;
        }
        *open += 1;
        Some(PeerPlace(self.clone(), Some(peer)))
    }
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let Some(peer) = self.1 else { return };
        if let Ok(mut map) = (self.0).0.lock() {
            if let Some(open) = map.get_mut(&peer) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    map.remove(&peer);
                }
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, within `bounds`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    bounds: Bounds,
) {
    let peers = Peers::default();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // go on after a breath rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(place) = peers.take(peer.ip(), &bounds) else {
            drop(stream);
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                tower_service::Service::call(&mut router, request.map(axum::body::Body::new))
            },
        );
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _place = place;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    if tokio::time::timeout(bounds.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
}
