//! One session of the engine's sender and the jobs it carries.
//!
//! Jobs to one receiver share one session held open
//! ([`chunkstream_engine::session::send_files_open`]), so the engine's
//! priority scheduler shares the bandwidth between them 50/30/20 by class
//! as it does between the files of one `send`. A [`Carrier`] is the
//! agent's book of one such session: which jobs it carries and which
//! session file belongs to which job, the settings a job must share to
//! join it, the file names already in it, and the figures its jobs show
//! (RTT, per-path rates, busy retries), which are the session's.
//!
//! A job joins a running session when it goes to the same receiver with
//! the same paths, plane, rate cap and credentials ([`Carrier::key`]) and
//! none of its file names is in the session already; otherwise it waits
//! for the session to end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use chunkstream_engine::multipath::priority::Class;
use chunkstream_engine::session::{FileBatch, SendEvent};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::request::Prepared;

/// How a running job is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// For good.
    Cancel,
    /// Until resumed.
    Pause,
}

type Reply = oneshot::Receiver<Result<Range<usize>, String>>;

/// One running session and its jobs.
#[derive(Debug)]
pub struct Carrier {
    /// The first path's receiver.
    pub destination: SocketAddr,
    key: String,
    /// Takes batches while the session is open for them.
    batches: Option<mpsc::UnboundedSender<FileBatch>>,
    names: HashSet<String>,
    /// The job of each session file, by index, as far as known.
    owners: Vec<i64>,
    /// Batches sent whose indices the session has not told yet.
    replies: Vec<(i64, Reply)>,
    /// Ends the session (a job of it was paused or cancelled).
    stop: Option<oneshot::Sender<()>>,
    /// Jobs being paused or cancelled.
    pub stopping: HashMap<i64, Stop>,
    /// Jobs carried and not finished.
    pub jobs: Vec<i64>,
    /// Jobs finished, with their goodput (bits/s).
    pub finished: Vec<(i64, f64)>,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Per path: name, delivery rate (bits/s), state, RTT (ms), loss.
    pub paths: Vec<Value>,
    /// Busy refusals so far.
    pub busy_retries: u32,
    /// When and at how many acknowledged bytes the rate was last taken
    /// (until the engine's first per-path rates arrive).
    rate_mark: (Instant, u64),
    path_rates: bool,
}

/// What a new session needs besides its [`Carrier`].
pub struct Start {
    /// Its batches.
    pub batches: mpsc::UnboundedReceiver<FileBatch>,
    /// Fires when the session is to stop.
    pub stop: oneshot::Receiver<()>,
}

impl Carrier {
    /// The settings a job must share to join a session: receiver, paths,
    /// plane, rate cap and credentials.
    pub fn key(job: &Prepared) -> String {
        let c = &job.cfg;
        format!(
            "{:?}|{}|{:?}|{}|{}",
            c.paths,
            c.fec.is_some(),
            c.max_rate,
            c.peer,
            c.token
        )
    }

    /// The book of a new session carrying job `id` first.
    pub fn new(id: i64, job: &Prepared) -> (Self, Start) {
        let (batches_tx, batches) = mpsc::unbounded_channel();
        let (stop_tx, stop) = oneshot::channel();
        let carrier = Self {
            destination: job.destination,
            key: Self::key(job),
            batches: Some(batches_tx),
            names: job.sources.iter().map(|s| s.name.clone()).collect(),
            owners: vec![id; job.sources.len()],
            replies: Vec::new(),
            stop: Some(stop_tx),
            stopping: HashMap::new(),
            jobs: vec![id],
            finished: Vec::new(),
            rtt_ms: 0.0,
            paths: Vec::new(),
            busy_retries: 0,
            rate_mark: (Instant::now(), 0),
            path_rates: false,
        };
        (carrier, Start { batches, stop })
    }

    /// Whether the session still takes jobs.
    pub fn open(&self) -> bool {
        self.batches.is_some() && self.stop.is_some()
    }

    /// Whether `job` may join: same settings, no name already in the session.
    pub fn can_take(&self, job: &Prepared) -> bool {
        self.open()
            && Self::key(job) == self.key
            && job.sources.iter().all(|s| !self.names.contains(&s.name))
    }

    /// Job `id` joins the session in `class`.
    pub fn take(&mut self, id: i64, job: Prepared, class: Class) {
        let Some(batches) = &self.batches else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        self.names
            .extend(job.sources.iter().map(|s| s.name.clone()));
        let batch = FileBatch {
            files: job.sources,
            class,
            added: Some(tx),
        };
        if batches.send(batch).is_ok() {
            self.jobs.push(id);
            self.replies.push((id, rx));
        }
    }

    /// No more jobs: the session ends once its files are done.
    pub fn close(&mut self) {
        self.batches = None;
    }

    /// Stops the session for a pause or cancel of job `id`; its other
    /// unfinished jobs are queued again.
    pub fn stop_job(&mut self, id: i64, how: Stop) {
        self.stopping.insert(id, how);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Takes in the indices of batches the session has answered; the jobs
    /// whose batch it refused, with why.
    pub fn learn_indices(&mut self) -> Vec<(i64, String)> {
        let mut refused = Vec::new();
        let owners = &mut self.owners;
        self.replies.retain_mut(|(id, rx)| match rx.try_recv() {
            Ok(Ok(range)) => {
                if owners.len() < range.end {
                    owners.resize(range.end, -1);
                }
                owners[range].fill(*id);
                false
            }
            Ok(Err(why)) => {
                refused.push((*id, why));
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
        for (id, _) in &refused {
            self.jobs.retain(|j| j != id);
        }
        refused
    }

    /// The job session file `file` belongs to.
    pub fn owner(&self, file: usize) -> Option<i64> {
        self.owners.get(file).copied().filter(|&j| j >= 0)
    }

    /// Takes in the session's own figures from `e` (RTT, rates, busy).
    pub fn observe(&mut self, e: &SendEvent) {
        match e {
            SendEvent::Acked {
                acked_bytes, rtt, ..
            } => {
                self.rtt_ms = rtt.as_secs_f64() * 1e3;
                let (at, bytes) = self.rate_mark;
                let dt = at.elapsed().as_secs_f64();
                if !self.path_rates && dt >= 0.25 {
                    let rate = acked_bytes.saturating_sub(bytes) as f64 * 8.0 / dt;
                    self.paths = vec![
                        json!({"name": self.destination.to_string(), "rate_bps": rate, "state": "up"}),
                    ];
                    self.rate_mark = (Instant::now(), *acked_bytes);
                }
            }
            SendEvent::PathRates(rates) => {
                self.path_rates = true;
                self.paths = rates
                    .iter()
                    .map(|r| json!({"name": r.name, "rate_bps": r.rate_bps, "state": format!("{:?}", r.state).to_lowercase(), "rtt_ms": r.rtt_ms, "loss": r.loss}))
                    .collect();
            }
            SendEvent::Busy { attempt, .. } => self.busy_retries = *attempt,
            _ => {}
        }
    }

    /// Job `id` is done (all its files verified).
    pub fn job_done(&mut self, id: i64, goodput_bps: f64) {
        self.jobs.retain(|&j| j != id);
        self.finished.push((id, goodput_bps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkstream_engine::manifest::SourceFile;
    use chunkstream_engine::session::SendConfig;

    fn job(names: &[&str], rate: Option<u64>) -> Prepared {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut cfg = SendConfig::new(to, "ab".repeat(32).parse().unwrap(), "t");
        cfg.max_rate = rate;
        Prepared {
            sources: names
                .iter()
                .map(|n| SourceFile {
                    path: n.into(),
                    name: (*n).into(),
                    size: 10,
                })
                .collect(),
            cfg,
            destination: to,
        }
    }

    #[test]
    fn jobs_join_when_they_share_settings_and_no_name_and_files_map_to_them() {
        let (mut c, mut start) = Carrier::new(1, &job(&["a", "b"], None));
        assert_eq!(c.owner(1), Some(1));
        assert!(!c.can_take(&job(&["c"], Some(1000))), "another rate cap");
        assert!(!c.can_take(&job(&["b"], None)), "a name in the session");
        assert!(c.can_take(&job(&["c", "d"], None)));
        c.take(2, job(&["c", "d"], None), Class::Critical);
        c.take(3, job(&["e"], None), Class::High);
        assert!(!c.can_take(&job(&["c"], None)));
        // The session answers each batch with its indices, or refuses it.
        let b2 = start.batches.try_recv().unwrap();
        assert_eq!(b2.class, Class::Critical);
        let b3 = start.batches.try_recv().unwrap();
        b2.added.unwrap().send(Ok(2..4)).unwrap();
        assert_eq!(c.owner(3), None, "not known before it is learnt");
        assert!(c.learn_indices().is_empty());
        assert_eq!(
            (c.owner(2), c.owner(3), c.owner(4)),
            (Some(2), Some(2), None)
        );
        b3.added.unwrap().send(Err("no".into())).unwrap();
        assert_eq!(c.learn_indices(), [(3, "no".to_owned())]);
        assert_eq!(c.jobs, [1, 2]);
        c.job_done(1, 5.0);
        assert_eq!(
            (c.jobs.clone(), c.finished.clone()),
            (vec![2], vec![(1, 5.0)])
        );
        // A pause stops the session and it takes no one any more.
        c.stop_job(2, Stop::Pause);
        assert!(!c.open() && start.stop.try_recv().is_ok());
        c.close();
        assert!(start.batches.try_recv().is_err());
    }
}
