//! toolgate's relay: downstream sessions, upstream connectors and the call pipeline.
//!
//! See `README.md` beside this file for the design: how a request travels, how ids and progress
//! tokens are mapped, and how upstreams are supervised.
#![forbid(unsafe_code)]

pub mod audit;
pub mod channel;
pub mod config;
pub mod downstream;
pub mod gateway;
pub mod grant;
pub mod guard;
pub mod inventory;
pub mod listener;
pub mod manage;
pub mod metrics;
pub mod names;
pub mod seal;
pub mod session;
pub mod stores;
pub mod survey;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::Config;
pub use gateway::Gateway;
pub use guard::Guard;
pub use stores::Stores;

/// Lower-case hex of `bytes`, in one allocation: `hex::encode` collects a `char` at a time,
/// and the call path hexes a digest or an id on every call. The crate's one way to hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Checks the grants' policy files every `interval` and applies those that changed (an
/// invalid file keeps the policy in force). Ends when the gateway is dropped.
pub fn spawn_policy_reloader(gateway: &Arc<Gateway>, interval: Duration) {
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            gateway.refresh_grants().await;
            gateway.reload_policies().await;
        }
    });
}

/// Serves Streamable HTTP on `listener` until `shutdown` resolves; then lets in-flight requests
/// finish (for at most `grace`) and stops every upstream.
pub async fn serve_http(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let app = downstream::http::service(gateway.clone(), local);
    let expiry = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let n = gateway.expire_idle(Instant::now());
                if n > 0 {
                    tracing::info!(sessions = n, "closed idle sessions");
                }
            }
        }
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let gateway = gateway.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            gateway.begin_shutdown();
            let _ = stopped_tx.send(());
        }
    };
    let header_timeout = gateway.config.limits.header_timeout;
    let server = tokio::spawn(listener::accept(listener, signal, move |tcp, stop| {
        downstream::h1::connection(app.clone(), tcp, header_timeout, stop)
    }));
    let _ = stopped_rx.await;
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
    }
    expiry.abort();
    gateway.close_all();
    // Give upstream children the moment MCP's stdio shutdown asks for.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
