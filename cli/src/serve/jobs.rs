//! Send jobs: what the API submits, and the runner that starts them in
//! turn, each as one session of the engine's sender.
//!
//! A job is written to the store when submitted, so the queue is the
//! store: the runner looks at the queued jobs whenever something changes
//! (a submission, a job ending, a resume) and once a second, and starts
//! those it may. Two rules decide:
//!
//! * **one session per receiver at a time.** Jobs to one receiver take
//!   turns, highest priority class first (critical, then high, then
//!   normal), oldest first within a class. So a critical job submitted
//!   while a normal one waits goes first, but it does not share the link
//!   50/30/20 with a normal one already running: classes share bandwidth
//!   within one session (the engine's scheduler), not across sessions.
//!   Merging jobs into a running session would need the protocol to take
//!   new files mid-session; that is not built.
//! * **at most `max_running` sessions at once** over all receivers.
//!
//! Pausing or cancelling stops the session (the receiver keeps its partial
//! files); resuming queues the job again and its files resume from what
//! the receiver holds. A job the agent was running when it died is queued
//! again at the next start ([`super::store::Store::recover`]).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunkstream_engine::manifest::{SourceFile, collect_sources};
use chunkstream_engine::multipath::priority::Class;
use chunkstream_engine::multipath::spec::{PathSpec, parse_rate};
use chunkstream_engine::session::{SendConfig, SendEvent, SendReport, send_files};
use chunkstream_engine::ticket::Ticket;
use chunkstream_engine::transport::Congestion;
use chunkstream_engine::transport::identity::Fingerprint;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use super::events::Events;
use super::metrics::{LivePath, Metrics, add};
use super::store::{Record, State, Store};

/// A job as submitted (`POST /api/v1/transfers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Files and folders on the agent's host (folders recursively).
    pub inputs: Vec<PathBuf>,
    /// A receiver's ticket (stands for `to`, `peer` and `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The receiver's HOST:PORT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The receiver's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The receiver's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Paths, `LOCAL=REMOTE[@RATE]`, as `send --path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `critical`, `high` or `normal` (default).
    #[serde(default = "normal")]
    pub priority: String,
    /// `auto` (default), `fec` or `reliable`.
    #[serde(default = "auto")]
    pub plane: String,
    /// A cap on the whole transfer, as `send --max-rate` (e.g. `200mbit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<String>,
}

fn normal() -> String {
    "normal".into()
}

fn auto() -> String {
    "auto".into()
}

/// A job ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// Its files.
    pub sources: Vec<SourceFile>,
    /// The sender's settings.
    pub cfg: SendConfig,
    /// The first path's receiver, as the queue groups jobs.
    pub destination: SocketAddr,
}

fn resolve(to: &str) -> Result<SocketAddr, String> {
    to.to_socket_addrs()
        .map_err(|e| format!("cannot resolve receiver address {to:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("receiver address {to:?} resolves to nothing"))
}

/// The class named `s`.
pub fn class(s: &str) -> Result<Class, String> {
    match s {
        "critical" => Ok(Class::Critical),
        "high" => Ok(Class::High),
        "normal" => Ok(Class::Normal),
        other => Err(format!(
            "priority {other:?}: expected critical, high or normal"
        )),
    }
}

fn rank(c: Class) -> u8 {
    match c {
        Class::Critical => 0,
        Class::High => 1,
        Class::Normal => 2,
    }
}

impl JobRequest {
    /// Checks everything that can be checked before dialling: the inputs
    /// exist and can be listed, the destination and its credentials are
    /// well-formed. The error is the user's to read.
    pub fn prepare(&self) -> Result<Prepared, String> {
        if self.inputs.is_empty() {
            return Err("inputs: give at least one file or folder".into());
        }
        let class = class(&self.priority)?;
        let ticket = match &self.ticket {
            Some(t) => Some(t.parse::<Ticket>().map_err(|e| format!("ticket: {e}"))?),
            None => None,
        };
        let mut paths = self
            .paths
            .iter()
            .map(|p| PathSpec::parse(p).map_err(|e| format!("paths: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(to) = &self.to {
            paths.insert(0, PathSpec::to(resolve(to)?));
        }
        let (peer, token) = match (&ticket, &self.peer, &self.token) {
            (Some(t), _, _) => {
                if paths.is_empty() {
                    paths.push(PathSpec::to(t.addresses[0]));
                }
                (t.fingerprint, t.token.clone())
            }
            (None, Some(p), Some(tok)) => (
                p.parse::<Fingerprint>().map_err(|e| format!("peer: {e}"))?,
                tok.clone(),
            ),
            _ => return Err("give a ticket, or peer and token".into()),
        };
        if paths.is_empty() {
            return Err("give a ticket, to, or paths: where to send".into());
        }
        let max_rate = match &self.max_rate {
            Some(r) => Some(parse_rate(r).map_err(|e| format!("max_rate: {e}"))?),
            None => None,
        };
        let sources = collect_sources(&self.inputs).map_err(|e| e.to_string())?;
        let destination = paths[0].remote;
        let mut cfg = SendConfig::new(destination, peer, token);
        cfg.paths = paths;
        cfg.classes = vec![class; sources.len()];
        cfg.max_rate = max_rate;
        match self.plane.as_str() {
            "auto" | "fec" => {
                cfg.fec = Some(chunkstream_engine::send::FecConfig::default());
                cfg.tuning.congestion = Congestion::Rate;
            }
            "reliable" => cfg.tuning.congestion = Congestion::Cubic,
            other => {
                return Err(format!("plane {other:?}: expected auto, fec or reliable"));
            }
        }
        Ok(Prepared {
            sources,
            cfg,
            destination,
        })
    }
}

/// How a running job is being stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancel,
    Pause,
}

/// What the API shows of a running job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Bytes the receiver acknowledged (held ones included).
    pub bytes_done: u64,
    /// Bytes of the job.
    pub bytes: u64,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Per path: name, delivery rate (bits/s), state.
    pub paths: Vec<serde_json::Value>,
    /// Busy refusals so far (the receiver was full).
    pub busy_retries: u32,
}

#[derive(Debug)]
struct Live {
    destination: SocketAddr,
    progress: Progress,
    stop: Option<oneshot::Sender<Stop>>,
    /// When and at how many acknowledged bytes the rate was last taken
    /// (one path: the engine reports per-path rates only with several).
    rate_mark: (Instant, u64),
    /// The engine reports per-path rates (several paths).
    path_rates: bool,
}

/// The runner.
#[derive(Debug)]
pub struct Jobs {
    store: Arc<Store>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<i64, Live>>,
    wake: Notify,
    max_running: usize,
}

/// Why a user action on a job could not be done.
#[derive(Debug)]
pub enum ActionError {
    /// No such job.
    NotFound,
    /// Not possible in its state.
    Conflict(String),
    /// The store failed.
    Internal(String),
}

impl Jobs {
    /// A runner over `store`, at most `max_running` sessions at once.
    pub fn new(
        store: Arc<Store>,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        max_running: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            events,
            metrics,
            live: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            max_running: max_running.max(1),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and stores a job; its id. It runs when its turn comes.
    pub fn submit(&self, request: &JobRequest) -> Result<i64, String> {
        let prepared = request.prepare()?;
        let value = serde_json::to_value(request).map_err(|e| e.to_string())?;
        let id = self
            .store
            .add_job(&prepared.destination.to_string(), &value)
            .map_err(|e| format!("cannot store the job: {e}"))?;
        let bytes: u64 = prepared.sources.iter().map(|s| s.size).sum();
        let _ = self
            .store
            .set_size(id, prepared.sources.len() as u64, bytes);
        self.state_event(id, State::Queued, None);
        self.wake.notify_one();
        Ok(id)
    }

    /// Running jobs' progress.
    pub fn progress(&self, id: i64) -> Option<Progress> {
        self.live().get(&id).map(|l| l.progress.clone())
    }

    /// How many run now.
    pub fn running(&self) -> usize {
        self.live().len()
    }

    /// Every running job's paths, for the metrics.
    pub fn live_paths(&self) -> Vec<LivePath> {
        let live = self.live();
        let mut out = Vec::new();
        for (id, l) in live.iter() {
            for p in &l.progress.paths {
                out.push(LivePath {
                    transfer: *id,
                    path: p["name"].as_str().unwrap_or_default().to_owned(),
                    rate_bps: p["rate_bps"].as_f64().unwrap_or(0.0),
                    rtt_s: l.progress.rtt_ms / 1e3,
                });
            }
        }
        out
    }

    /// Cancels (for good) or pauses a job.
    pub fn stop(&self, id: i64, pause: bool) -> Result<(), ActionError> {
        let mut live = self.live();
        let record = self.record(id)?;
        if let Some(l) = live.get_mut(&id) {
            if let Some(tx) = l.stop.take() {
                let _ = tx.send(if pause { Stop::Pause } else { Stop::Cancel });
            }
            return Ok(());
        }
        let to = if pause {
            State::Paused
        } else {
            State::Cancelled
        };
        match record.state {
            State::Queued => {}
            State::Paused if !pause => {}
            s => {
                return Err(ActionError::Conflict(format!(
                    "the transfer is {}; only a queued{} transfer can be {}",
                    s.as_str(),
                    if pause { "" } else { ", running or paused" },
                    if pause { "paused" } else { "cancelled" }
                )));
            }
        }
        self.store
            .set_state(id, to, None)
            .map_err(|e| ActionError::Internal(e.to_string()))?;
        drop(live);
        self.state_event(id, to, None);
        Ok(())
    }

    /// Queues a paused or failed job again.
    pub fn resume(&self, id: i64) -> Result<(), ActionError> {
        let live = self.live();
        let record = self.record(id)?;
        if !matches!(record.state, State::Paused | State::Failed) || live.contains_key(&id) {
            return Err(ActionError::Conflict(format!(
                "the transfer is {}; only a paused or failed transfer can be resumed",
                record.state.as_str()
            )));
        }
        self.store
            .set_state(id, State::Queued, None)
            .map_err(|e| ActionError::Internal(e.to_string()))?;
        drop(live);
        self.state_event(id, State::Queued, None);
        self.wake.notify_one();
        Ok(())
    }

    fn record(&self, id: i64) -> Result<Record, ActionError> {
        match self.store.get(id) {
            Ok(Some(r)) if r.direction == "send" => Ok(r),
            Ok(Some(_)) => Err(ActionError::Conflict(
                "a received transfer is the sender's to control".into(),
            )),
            Ok(None) => Err(ActionError::NotFound),
            Err(e) => Err(ActionError::Internal(e.to_string())),
        }
    }

    fn state_event(&self, id: i64, state: State, error: Option<&str>) {
        self.events.publish(json!({
            "type": "state", "transfer": id, "state": state.as_str(), "error": error,
        }));
    }

    /// Starts jobs whenever something changes, for ever.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.schedule();
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts the queued jobs that may start now.
    fn schedule(self: &Arc<Self>) {
        let Ok(queued) = self.store.queued_jobs() else {
            return;
        };
        // Order by class, then age. Only the class is read here (the
        // destination is the row's peer, stored at submission): the full
        // check, which lists the inputs, runs once, when a job starts.
        let mut order: Vec<(u8, i64, String, Option<JobRequest>)> = queued
            .into_iter()
            .map(|r| {
                let request = serde_json::from_value::<JobRequest>(r.request).ok();
                let rank = request
                    .as_ref()
                    .and_then(|q| class(&q.priority).ok())
                    .map_or(0, rank);
                (rank, r.id, r.peer, request)
            })
            .collect();
        order.sort_by_key(|(rank, id, ..)| (*rank, *id));
        for (_, id, destination, request) in order {
            // Under the live lock, so a cancel or pause of a queued job
            // (also taken under it) cannot slip between this check and
            // the start.
            let mut live = self.live();
            if live.len() >= self.max_running {
                break;
            }
            if live
                .values()
                .any(|l| l.destination.to_string() == destination)
            {
                continue;
            }
            if !matches!(self.store.get(id), Ok(Some(r)) if r.state == State::Queued) {
                continue;
            }
            let prepared = request
                .ok_or_else(|| "the stored job is unreadable".to_owned())
                .and_then(|q| q.prepare());
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    // Its files went away, say, since it was submitted.
                    let _ = self.store.set_state(id, State::Failed, Some(&e));
                    add(&self.metrics.sends_failed, 1);
                    drop(live);
                    self.state_event(id, State::Failed, Some(&e));
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            let bytes = prepared.sources.iter().map(|s| s.size).sum();
            live.insert(
                id,
                Live {
                    destination: prepared.destination,
                    progress: Progress {
                        bytes,
                        ..Progress::default()
                    },
                    stop: Some(tx),
                    rate_mark: (Instant::now(), 0),
                    path_rates: false,
                },
            );
            let _ = self.store.set_state(id, State::Running, None);
            drop(live);
            self.state_event(id, State::Running, None);
            tokio::spawn(self.clone().run_job(id, prepared, rx));
        }
    }

    async fn run_job(self: Arc<Self>, id: i64, job: Prepared, stop: oneshot::Receiver<Stop>) {
        let me = self.clone();
        let mut last_progress = Instant::now() - Duration::from_secs(1);
        let on_event = move |e: &SendEvent| me.on_send_event(id, e, &mut last_progress);
        let outcome = tokio::select! {
            r = send_files(job.sources, &job.cfg, on_event) => Ok(r),
            s = stop => Err(s.unwrap_or(Stop::Cancel)),
        };
        // The job leaves the live set and gets its final state under one
        // lock, so a cancel or resume never sees it in between.
        let mut live = self.live();
        let mut bytes_done = live.remove(&id).map_or(0, |l| l.progress.bytes_done);
        let (state, error) = match outcome {
            Ok(Ok(report)) => {
                self.finished(id, &report);
                bytes_done = report.bytes;
                (State::Done, None)
            }
            Ok(Err(e)) => {
                add(&self.metrics.sends_failed, 1);
                (State::Failed, Some(e.to_string()))
            }
            Err(Stop::Pause) => {
                add(&self.metrics.sends_stopped, 1);
                (State::Paused, None)
            }
            Err(Stop::Cancel) => {
                add(&self.metrics.sends_stopped, 1);
                (State::Cancelled, None)
            }
        };
        let _ = self.store.set_progress(id, bytes_done);
        let _ = self.store.set_state(id, state, error.as_deref());
        drop(live);
        self.state_event(id, state, error.as_deref());
        self.wake.notify_one();
    }

    fn finished(&self, id: i64, report: &SendReport) {
        add(&self.metrics.sends_done, 1);
        add(&self.metrics.sent_bytes, report.bytes);
        if let Some(fec) = &report.fec {
            add(
                &self.metrics.repair_shards,
                fec.repair_shards + fec.spare_shards,
            );
        }
        let paths = serde_json::to_value(&report.paths).unwrap_or_default();
        let _ = self.store.set_outcome(id, report.goodput_bps, &paths);
    }

    /// Folds a sender event into the job's progress; publishes progress at
    /// most four times a second, path changes at once.
    fn on_send_event(&self, id: i64, e: &SendEvent, last: &mut Instant) {
        let mut live = self.live();
        let Some(l) = live.get_mut(&id) else {
            return;
        };
        let p = &mut l.progress;
        match e {
            SendEvent::Acked {
                acked_bytes, rtt, ..
            } => {
                p.bytes_done = *acked_bytes;
                p.rtt_ms = rtt.as_secs_f64() * 1e3;
                let (at, bytes) = l.rate_mark;
                let dt = at.elapsed().as_secs_f64();
                if !l.path_rates && dt >= 0.25 {
                    let rate = acked_bytes.saturating_sub(bytes) as f64 * 8.0 / dt;
                    p.paths = vec![
                        json!({"name": l.destination.to_string(), "rate_bps": rate, "state": "up"}),
                    ];
                    l.rate_mark = (Instant::now(), *acked_bytes);
                }
            }
            SendEvent::PathRates(rates) => {
                l.path_rates = true;
                p.paths = rates
                    .iter()
                    .map(|r| json!({"name": r.name, "rate_bps": r.rate_bps, "state": format!("{:?}", r.state).to_lowercase()}))
                    .collect();
            }
            SendEvent::Busy { attempt, .. } => p.busy_retries = *attempt,
            SendEvent::Path(change) => {
                self.events.publish(json!({
                    "type": "path", "transfer": id, "path": change.name,
                    "state": format!("{:?}", change.state).to_lowercase(), "reason": change.reason,
                }));
            }
            _ => {}
        }
        if last.elapsed() >= Duration::from_millis(250) {
            *last = Instant::now();
            let body = json!({"type": "progress", "transfer": id, "progress": p});
            drop(live);
            self.events.publish(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<JobRequest, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_job_is_checked_before_it_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        let peer = "ab".repeat(32);
        let ok = request(json!({"inputs": [file], "to": "127.0.0.1:9", "peer": peer, "token": "t", "priority": "high"}))
            .unwrap()
            .prepare()
            .unwrap();
        assert_eq!(ok.cfg.classes, [Class::High]);
        assert_eq!(ok.sources.len(), 1);
        assert!(ok.cfg.fec.is_some(), "auto is the FEC plane");

        let err = |j: serde_json::Value| request(j).and_then(|r| r.prepare()).unwrap_err();
        assert!(
            err(json!({"inputs": [], "to": "127.0.0.1:9", "peer": peer, "token": "t"}))
                .contains("at least one")
        );
        assert!(err(json!({"inputs": [dir.path().join("missing")], "to": "127.0.0.1:9", "peer": peer, "token": "t"})).contains("missing"));
        assert!(
            err(json!({"inputs": [file], "to": "127.0.0.1:9"}))
                .contains("ticket, or peer and token")
        );
        assert!(err(json!({"inputs": [file], "ticket": "cst1zz"})).contains("ticket"));
        assert!(err(json!({"inputs": [file], "to": "127.0.0.1:9", "peer": peer, "token": "t", "priority": "urgent"})).contains("priority"));
        assert!(err(json!({"inputs": [file], "to": "127.0.0.1:9", "peer": peer, "token": "t", "plane": "warp"})).contains("plane"));
        assert!(err(json!({"inputs": [file], "colour": "red"})).contains("unknown field"));
    }
}
