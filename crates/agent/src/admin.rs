//! The admin HTTP endpoint: Prometheus text exposition on `GET /metrics`,
//! the status document as JSON on `GET /status` (the same data `dcsync
//! status` prints), and `GET /journal/seq-at?store=S&position=P` (the seq
//! of this DC's stream a backup of its store taken at source position `P`
//! holds, for `dcsync bootstrap --backup-position`: [`crate::seq_at`]),
//! served on the DC's `admin` address.
//!
//! The metrics come from the internal events (`dcsync_core::events`)
//! through the `metrics` facade into a Prometheus recorder installed once
//! per process; every series carries the constant label `dc`.

use crate::seq_at::JournalQuery;
use crate::status::StatusBoard;
use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// Installs the process-wide Prometheus recorder with the constant label
/// `dc = me` and registers every metric's help text.
///
/// Errors: a recorder is already installed (a second agent in one process).
pub fn install_recorder(me: &str) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .add_global_label("dc", me)
        .install_recorder()
        .context("installing the Prometheus metrics recorder")?;
    dcsync_core::events::describe();
    Ok(handle)
}

/// Serves `/metrics`, `/status` and `/journal/seq-at` on `addr` until
/// `shutdown` turns true.
///
/// Errors: the address cannot be bound.
pub async fn serve(
    addr: &str,
    metrics: PrometheusHandle,
    board: StatusBoard,
    journal: JournalQuery,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin address {addr}"))?;
    tracing::info!(%addr, "admin endpoint: /metrics (Prometheus), /status (JSON), /journal/seq-at");
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/status",
            get(move || {
                let body = board.last_json();
                async move { ([(CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        )
        .route(
            "/journal/seq-at",
            get(move |uri: axum::http::Uri| {
                let journal = journal.clone();
                async move {
                    let (code, body) = match journal.answer(uri.query().unwrap_or("")).await {
                        Ok(a) => (StatusCode::OK, serde_json::to_vec(&a)),
                        Err(e) => (
                            e.status(),
                            serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })),
                        ),
                    };
                    let body = body.unwrap_or_default();
                    (code, [(CONTENT_TYPE, "application/json")], body).into_response()
                }
            }),
        )
        .route(
            "/",
            get(|| async { "dcsync agent: /metrics /status /journal/seq-at\n" }),
        );
    Ok(tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    }))
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
