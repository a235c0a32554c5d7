//! `chunkstream-engine serve`: the long-running agent. One process per
//! host that receives as `recv` does (same identity, token, `--out`,
//! `--listen`) and sends the jobs submitted to its HTTP API, keeping jobs
//! and history in SQLite.
//!
//! One concept per file: `store` (the SQLite jobs and history), `jobs`
//! (job requests and the runner), `events` (the event stream), `metrics`
//! (counters and the Prometheus text), `api` (HTTP routes, auth), and
//! `history` (the `history` command). This file starts them and records
//! what the receiver does.

pub mod api;
pub mod carrier;
pub mod events;
pub mod history;
pub mod jobs;
pub mod metrics;
pub mod request;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chunkstream_engine::session::RecvEvent;
use serde_json::json;

use crate::output::{json_line, line};
use crate::recv::{Bound, ReceiveOptions};
use events::Events;
use jobs::Jobs;
use metrics::{Metrics, add};
use store::{State, Store};

/// Run the agent: receive like `recv`, send jobs submitted over HTTP.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub receive: ReceiveOptions,
    /// Address of the HTTP API and dashboard. Loopback by default; any
    /// other address needs --api-token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    pub http: SocketAddr,
    /// Token every API request must carry (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "CHUNKSTREAM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A folder the API may send files from (repeatable). Jobs naming any
    /// file outside these folders (after resolving symbolic links) are
    /// refused; with none, the agent receives but sends nothing.
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<std::path::PathBuf>,
    /// Send jobs running at once (over all receivers; one per receiver).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_jobs: usize,
    /// Days ended transfers are kept in the history.
    #[arg(long, value_name = "DAYS", default_value_t = 30.0)]
    pub history_days: f64,
    /// Print one JSON object per line (the first has "event":"listening").
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    if !args.http.ip().is_loopback() && args.api_token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "--http {} is not a loopback address: give --api-token (or CHUNKSTREAM_API_TOKEN) so that only you can use the API",
            args.http
        );
    }
    let allow = args
        .allow
        .iter()
        .map(|d| {
            std::fs::canonicalize(d)
                .ok()
                .filter(|c| c.is_dir())
                .with_context(|| format!("--allow {}: not a folder that exists", d.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let Bound {
        receiver,
        token,
        ticket,
        state_dir,
    } = args.receive.bind(false)?;
    let store = Arc::new(Store::open(&state_dir)?);
    store.recover()?;
    store.prune(args.history_days)?;
    let events = Arc::new(Events::default());
    let metrics = Arc::new(Metrics::default());
    let jobs = Jobs::new(
        store.clone(),
        events.clone(),
        metrics.clone(),
        args.max_jobs,
        allow,
        state_dir.clone(),
    );
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http))?;
    let http = listener.local_addr()?;
    let addrs: Vec<String> = receiver
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let fingerprint = receiver.fingerprint().to_string();
    let agent = json!({
        "addresses": addrs, "fingerprint": fingerprint,
        "ticket": ticket.as_ref().ok(), "out": args.receive.out.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if args.json {
        json_line(&json!({
            "event": "listening", "addresses": addrs, "fingerprint": fingerprint,
            "token": token, "ticket": ticket.as_ref().ok(), "http": http.to_string(),
            "out": args.receive.out.display().to_string(),
        }));
    } else {
        for a in &addrs {
            line(&format!("listening on  {a}"));
        }
        line(&format!("fingerprint   {fingerprint}"));
        line(&format!("token         {token}"));
        if let Ok(t) = &ticket {
            line(&format!("ticket        {t}"));
        }
        line(&format!("dashboard     http://{http}/"));
    }
    tokio::spawn(jobs.clone().run());
    let pruning = store.clone();
    let days = args.history_days;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let _ = pruning.prune(days);
        }
    });
    let app = api::router(api::AppState {
        jobs,
        store: store.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        api_token: args.api_token.clone().filter(|t| !t.is_empty()),
        agent,
    });
    let recorder = Recorder {
        store,
        events,
        metrics,
        sessions: Mutex::new(HashMap::new()),
    };
    tokio::select! {
        r = receiver.serve(false, move |e| recorder.record(e)) => {
            r.map(|_| ()).map_err(|e| anyhow::anyhow!("the receiver stopped: {e}"))
        }
        r = axum::serve(listener, app) => r.context("the HTTP server stopped"),
    }
}

/// Records what the receiver does: history rows, counters, events.
struct Recorder {
    store: Arc<Store>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    /// Running received sessions' rows, by sender address.
    sessions: Mutex<HashMap<SocketAddr, i64>>,
}

impl Recorder {
    fn record(&self, e: RecvEvent) {
        let state_event = |id: i64, state: State, error: Option<&str>| {
            self.events.publish(json!({
                "type": "state", "transfer": id, "state": state.as_str(),
                "direction": "recv", "error": error,
            }));
        };
        match e {
            RecvEvent::Busy { .. } => add(&self.metrics.refused_busy, 1),
            RecvEvent::Refused { reason, .. } => self.metrics.refused(&reason),
            RecvEvent::SessionStarted { peer, files, bytes } => {
                if let Ok(id) = self
                    .store
                    .add_received(&peer.to_string(), files as u64, bytes)
                {
                    self.sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(peer, id);
                    add(&self.metrics.receives_active, 1);
                    state_event(id, State::Running, None);
                }
            }
            RecvEvent::FilesAdded { peer, files, bytes } => {
                let id = self
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&peer)
                    .copied();
                if let Some(r) = id.and_then(|id| self.store.get(id).ok().flatten()) {
                    let _ = self
                        .store
                        .set_size(r.id, r.files + files as u64, r.bytes + bytes);
                }
            }
            RecvEvent::FileDone { bytes, .. } => add(&self.metrics.received_bytes, bytes),
            RecvEvent::SessionEnded { peer, result } => {
                let started = self
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&peer);
                if started.is_some() {
                    self.metrics
                        .receives_active
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                let Some(id) =
                    started.or_else(|| self.store.add_received(&peer.to_string(), 0, 0).ok())
                else {
                    return;
                };
                match result {
                    Ok(s) => {
                        add(&self.metrics.receives_done, 1);
                        let _ = self.store.set_progress(id, s.bytes);
                        let goodput = if s.seconds > 0.0 {
                            s.bytes as f64 * 8.0 / s.seconds
                        } else {
                            0.0
                        };
                        let _ = self.store.set_outcome(id, goodput, &json!([]));
                        let _ = self.store.set_state(id, State::Done, None);
                        state_event(id, State::Done, None);
                    }
                    Err(why) => {
                        add(&self.metrics.receives_failed, 1);
                        let _ = self.store.set_state(id, State::Failed, Some(&why));
                        state_event(id, State::Failed, Some(&why));
                    }
                }
            }
            RecvEvent::Resumed { .. } | RecvEvent::PathJoined { .. } => {}
        }
    }
}
