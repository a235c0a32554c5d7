//! Send jobs: the runner that starts what the API submitted, as sessions
//! of the engine's sender.
//!
//! A job is written to the store when submitted, so the queue is the
//! store: the runner looks at the queued jobs whenever something changes
//! (a submission, a job ending, a resume) and once a second, highest
//! priority class first (critical, high, normal), oldest first within a
//! class. Three rules decide:
//!
//! * **jobs to one receiver share one session.** A job to a receiver that
//!   a session already serves joins it while it runs (the session is held
//!   open, protocol version 4 and later), so the engine's scheduler shares the
//!   bandwidth between overlapping jobs 50/30/20 by class, as between the
//!   files of one `send` ([`super::carrier`]). A job that cannot join
//!   (other paths, plane, rate cap or credentials, or a file name the
//!   session already has) waits for that session to end.
//! * **a session ends when its jobs are done** and no queued job joins it.
//! * **at most `max_running` sessions at once** over all receivers.
//!
//! A job is done when the receiver verified its last file, whatever the
//! rest of its session does. Pausing or cancelling a job stops its
//! session (the receiver keeps the partial files); the session's other
//! unfinished jobs are queued again at once and go on in a new session
//! from what the receiver holds, since the protocol has no way to take
//! files out of a running session. A session that fails fails its
//! unfinished jobs with its error. A job the agent was running when it
//! died is queued again at the next start ([`super::store::Store::recover`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunkstream_engine::session::{SendEvent, SendReport, SessionError, send_files_open};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use super::carrier::{Carrier, Start, Stop};
use super::events::Events;
use super::metrics::{LivePath, Metrics, add};
pub use super::request::{JobRequest, Prepared, class, confine, rank};
use super::store::{Record, State, Store};

/// What the API shows of a running job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Bytes the receiver acknowledged (held ones included).
    pub bytes_done: u64,
    /// Bytes of the job.
    pub bytes: u64,
    /// Smoothed RTT, milliseconds (its session's).
    pub rtt_ms: f64,
    /// Per path: name, delivery rate (bits/s), state (its session's, which
    /// other jobs may share).
    pub paths: Vec<serde_json::Value>,
    /// Busy refusals so far (the receiver was full).
    pub busy_retries: u32,
    /// FEC plane: recovery shards its blocks took beyond the up-front ones
    /// (repairs of what was lost, margin on spare capacity).
    pub repair_shards: u64,
}

/// A running job.
#[derive(Debug)]
struct LiveJob {
    session: u64,
    progress: Progress,
    files: usize,
    files_done: usize,
    started: Instant,
    published: Option<Instant>,
}

/// Running jobs and the sessions carrying them.
#[derive(Debug, Default)]
struct Running {
    jobs: HashMap<i64, LiveJob>,
    sessions: HashMap<u64, Carrier>,
    next_session: u64,
}

/// How a session ended.
enum Ended {
    Report(Box<SendReport>),
    Failed(SessionError),
    Stopped,
}

/// The runner.
#[derive(Debug)]
pub struct Jobs {
    store: Arc<Store>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    running: Mutex<Running>,
    wake: Notify,
    max_running: usize,
    /// The folders jobs may send from (canonical).
    allow: Vec<std::path::PathBuf>,
    /// Where what each path carried is remembered (`path_memory`), as
    /// `send` does.
    state_dir: std::path::PathBuf,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The request does not hold (missing files, bad destination...).
    Invalid(String),
    /// It names files outside the folders the agent may send from.
    Forbidden(String),
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
        allow: Vec<std::path::PathBuf>,
        state_dir: std::path::PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            events,
            metrics,
            running: Mutex::new(Running::default()),
            wake: Notify::new(),
            max_running: max_running.max(1),
            allow,
            state_dir,
        })
    }

    /// A stored request, checked again when it is to start (its files may
    /// have changed since), confined to the allowed folders.
    fn prepare(&self, request: &JobRequest) -> Result<Prepared, SubmitError> {
        let mut prepared = request.prepare().map_err(SubmitError::Invalid)?;
        confine(&mut prepared.sources, &self.allow).map_err(SubmitError::Forbidden)?;
        Ok(prepared)
    }

    fn running_now(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and stores a job; its id. It runs when its turn comes.
    pub fn submit(&self, request: &JobRequest) -> Result<i64, SubmitError> {
        let prepared = self.prepare(request)?;
        let value =
            serde_json::to_value(request).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let id = self
            .store
            .add_job(&prepared.destination.to_string(), &value)
            .map_err(|e| SubmitError::Invalid(format!("cannot store the job: {e}")))?;
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
        self.running_now().jobs.get(&id).map(|l| l.progress.clone())
    }

    /// How many jobs run now.
    pub fn running(&self) -> usize {
        self.running_now().jobs.len()
    }

    /// Every running job's paths, for the metrics.
    pub fn live_paths(&self) -> Vec<LivePath> {
        let running = self.running_now();
        let mut out = Vec::new();
        for (id, l) in running.jobs.iter() {
            for p in &l.progress.paths {
                out.push(LivePath {
                    transfer: *id,
                    path: p["name"].as_str().unwrap_or_default().to_owned(),
                    rate_bps: p["rate_bps"].as_f64().unwrap_or(0.0),
                    rtt_s: p["rtt_ms"].as_f64().unwrap_or(l.progress.rtt_ms) / 1e3,
                    loss: p["loss"].as_f64(),
                });
            }
        }
        out
    }

    /// Cancels (for good) or pauses a job.
    pub fn stop(&self, id: i64, pause: bool) -> Result<(), ActionError> {
        let mut running = self.running_now();
        let record = self.record(id)?;
        if let Some(l) = running.jobs.get(&id) {
            let how = if pause { Stop::Pause } else { Stop::Cancel };
            let session = l.session;
            if let Some(s) = running.sessions.get_mut(&session) {
                s.stop_job(id, how);
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
        drop(running);
        self.state_event(id, to, None);
        Ok(())
    }

    /// Queues a paused or failed job again.
    pub fn resume(&self, id: i64) -> Result<(), ActionError> {
        let running = self.running_now();
        let record = self.record(id)?;
        if !matches!(record.state, State::Paused | State::Failed) || running.jobs.contains_key(&id)
        {
            return Err(ActionError::Conflict(format!(
                "the transfer is {}; only a paused or failed transfer can be resumed",
                record.state.as_str()
            )));
        }
        self.store
            .set_state(id, State::Queued, None)
            .map_err(|e| ActionError::Internal(e.to_string()))?;
        drop(running);
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

    /// Starts the queued jobs that may start now, in sessions of their own
    /// or joining their receiver's; lets sessions with nothing left end.
    fn schedule(self: &Arc<Self>) {
        let Ok(queued) = self.store.queued_jobs() else {
            return;
        };
        // Order by class, then age. Only the class is read here (the
        // destination is the row's peer, stored at submission): the full
        // check, which lists the inputs, runs when a job may start.
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
            // Under the lock, so a cancel or pause of a queued job (also
            // taken under it) cannot slip between this check and the start.
            let mut running = self.running_now();
            let serving = running
                .sessions
                .iter()
                .find(|(_, s)| s.destination.to_string() == destination)
                .map(|(k, s)| (*k, s.open()));
            match serving {
                Some((_, false)) => continue,
                None if running.sessions.len() >= self.max_running => continue,
                _ => {}
            }
            if !matches!(self.store.get(id), Ok(Some(r)) if r.state == State::Queued) {
                continue;
            }
            let prepared = request
                .ok_or_else(|| "the stored job is unreadable".to_owned())
                .and_then(|q| {
                    let p = self.prepare(&q).map_err(|e| match e {
                        SubmitError::Invalid(m) | SubmitError::Forbidden(m) => m,
                    })?;
                    Ok((class(&q.priority)?, p))
                });
            let (job_class, prepared) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    // Its files went away, say, since it was submitted.
                    let _ = self.store.set_state(id, State::Failed, Some(&e));
                    add(&self.metrics.sends_failed, 1);
                    drop(running);
                    self.state_event(id, State::Failed, Some(&e));
                    continue;
                }
            };
            let live = LiveJob {
                session: 0,
                progress: Progress {
                    bytes: prepared.sources.iter().map(|s| s.size).sum(),
                    ..Progress::default()
                },
                files: prepared.sources.len(),
                files_done: 0,
                started: Instant::now(),
                published: None,
            };
            let session = match serving {
                Some((sid, _)) => {
                    let s = running.sessions.get_mut(&sid).expect("found above");
                    if !s.can_take(&prepared) {
                        continue;
                    }
                    s.take(id, prepared, job_class);
                    sid
                }
                None => {
                    let sid = running.next_session;
                    running.next_session += 1;
                    let (carrier, start) = Carrier::new(id, &prepared);
                    running.sessions.insert(sid, carrier);
                    tokio::spawn(self.clone().run_session(sid, prepared, start));
                    sid
                }
            };
            running.jobs.insert(id, LiveJob { session, ..live });
            let _ = self.store.set_state(id, State::Running, None);
            drop(running);
            self.state_event(id, State::Running, None);
        }
        for s in self.running_now().sessions.values_mut() {
            if s.jobs.is_empty() {
                s.close();
            }
        }
    }

    /// Runs one session of the engine's sender until its jobs are done
    /// and it is closed, it fails, or a job of it is stopped.
    async fn run_session(self: Arc<Self>, sid: u64, mut first: Prepared, start: Start) {
        // Each path starts from what the last send over it carried, as
        // `send` does (`crate::path_memory`).
        let peer = first.cfg.peer.to_string();
        match crate::path_memory::recall(&self.state_dir, &peer, &first.cfg.paths) {
            Ok(memory) => first.cfg.path_memory = memory,
            Err(e) => tracing::warn!("{e:#}; every path starts cold"),
        }
        let me = self.clone();
        let on_event = move |e: &SendEvent| me.on_session_event(sid, e);
        let ended = tokio::select! {
            r = send_files_open(first.sources, &first.cfg, start.batches, on_event) => match r {
                Ok(report) => {
                    let now = std::time::SystemTime::now();
                    if let Err(e) =
                        crate::path_memory::save(&self.state_dir, &peer, &report.paths, now)
                    {
                        tracing::warn!("the paths' rates are not remembered: {e:#}");
                    }
                    Ended::Report(Box::new(report))
                }
                Err(e) => Ended::Failed(e),
            },
            _ = start.stop => Ended::Stopped,
        };
        self.session_ended(sid, ended);
    }

    /// A session ended: each job it carried unfinished gets its state.
    fn session_ended(&self, sid: u64, ended: Ended) {
        let mut running = self.running_now();
        let Some(s) = running.sessions.remove(&sid) else {
            return;
        };
        let mut changes = Vec::new();
        let mut finished = s.finished.clone();
        for &id in &s.jobs {
            let Some(job) = running.jobs.remove(&id) else {
                continue;
            };
            let (state, error) = match (&ended, s.stopping.get(&id)) {
                (_, Some(Stop::Pause)) => (State::Paused, None),
                (_, Some(Stop::Cancel)) => (State::Cancelled, None),
                // Another job of its session was stopped: it goes on in
                // a new one.
                (Ended::Stopped, None) => (State::Queued, None),
                (Ended::Failed(e), None) => (State::Failed, Some(e.to_string())),
                // Every file of the session was verified, so this job's
                // too (its last FILE_DONE raced the end).
                (Ended::Report(_), None) => {
                    finished.push((id, self.job_finished(&job, id)));
                    (State::Done, None)
                }
            };
            match state {
                State::Failed => add(&self.metrics.sends_failed, 1),
                State::Paused | State::Cancelled => add(&self.metrics.sends_stopped, 1),
                _ => {}
            }
            let _ = self.store.set_progress(id, job.progress.bytes_done);
            let _ = self.store.set_state(id, state, error.as_deref());
            changes.push((id, state, error));
        }
        if let Ended::Report(report) = &ended {
            if let Some(fec) = &report.fec {
                add(
                    &self.metrics.repair_shards,
                    fec.repair_shards + fec.spare_shards,
                );
            }
            // The session's paths, as it measured them to the end, for
            // every job it carried.
            let paths = serde_json::to_value(&report.paths).unwrap_or_default();
            for (id, goodput) in &finished {
                let _ = self.store.set_outcome(*id, *goodput, &paths);
            }
        }
        drop(running);
        for (id, state, error) in changes {
            self.state_event(id, state, error.as_deref());
        }
        self.wake.notify_one();
    }

    /// Counts a job whose every file was verified; its goodput.
    fn job_finished(&self, job: &LiveJob, id: i64) -> f64 {
        add(&self.metrics.sends_done, 1);
        add(&self.metrics.sent_bytes, job.progress.bytes);
        let secs = job.started.elapsed().as_secs_f64().max(1e-3);
        let goodput = job.progress.bytes as f64 * 8.0 / secs;
        let paths = serde_json::Value::Array(job.progress.paths.clone());
        let _ = self.store.set_outcome(id, goodput, &paths);
        let _ = self.store.set_repair_shards(id, job.progress.repair_shards);
        goodput
    }

    /// Folds a session's event into its jobs' progress; publishes each
    /// job's progress at most four times a second, path changes at once,
    /// and a job's end as soon as its last file is verified.
    fn on_session_event(&self, sid: u64, e: &SendEvent) {
        let mut guard = self.running_now();
        let running = &mut *guard;
        let Some(s) = running.sessions.get_mut(&sid) else {
            return;
        };
        let mut publish = Vec::new();
        let mut ended: Vec<(i64, State, Option<String>)> = Vec::new();
        for (id, why) in s.learn_indices() {
            if let Some(job) = running.jobs.remove(&id) {
                add(&self.metrics.sends_failed, 1);
                let _ = self.store.set_progress(id, job.progress.bytes_done);
                let _ = self.store.set_state(id, State::Failed, Some(&why));
                ended.push((id, State::Failed, Some(why)));
            }
        }
        s.observe(e);
        match e {
            SendEvent::Acked {
                file,
                bytes,
                repair_shards,
                ..
            } => {
                if let Some(job) = s.owner(*file).and_then(|j| running.jobs.get_mut(&j)) {
                    job.progress.bytes_done += bytes;
                    job.progress.repair_shards += repair_shards;
                }
            }
            SendEvent::FileDone { file, .. } => {
                let owner = s.owner(*file);
                if let Some(id) = owner
                    && let Some(job) = running.jobs.get_mut(&id)
                {
                    job.files_done += 1;
                    if job.files_done >= job.files {
                        let job = running.jobs.remove(&id).expect("just found");
                        let goodput = self.job_finished(&job, id);
                        s.job_done(id, goodput);
                        let _ = self.store.set_progress(id, job.progress.bytes);
                        let _ = self.store.set_state(id, State::Done, None);
                        ended.push((id, State::Done, None));
                    }
                }
            }
            SendEvent::Path(change) => {
                for &id in &s.jobs {
                    publish.push(json!({
                        "type": "path", "transfer": id, "path": change.name,
                        "state": format!("{:?}", change.state).to_lowercase(), "reason": change.reason,
                    }));
                }
            }
            _ => {}
        }
        for &id in &s.jobs {
            let Some(job) = running.jobs.get_mut(&id) else {
                continue;
            };
            let p = &mut job.progress;
            p.rtt_ms = s.rtt_ms;
            p.paths.clone_from(&s.paths);
            p.busy_retries = s.busy_retries;
            if job
                .published
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
            {
                job.published = Some(Instant::now());
                publish.push(json!({"type": "progress", "transfer": id, "progress": p}));
            }
        }
        drop(guard);
        for body in publish {
            self.events.publish(body);
        }
        let any_ended = !ended.is_empty();
        for (id, state, error) in ended {
            self.state_event(id, state, error.as_deref());
        }
        if any_ended {
            // A session with nothing left may end (or take a queued job).
            self.wake.notify_one();
        }
    }
}
