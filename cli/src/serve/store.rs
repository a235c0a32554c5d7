//! The agent's jobs and transfer history, in one SQLite file in the state
//! folder (`agent.sqlite`).
//!
//! One table, `transfers`: a row per send job (submitted through the API)
//! and per session received. A send job's row is written when it is
//! submitted (`queued`), so a job survives a `kill -9` of the agent: on the
//! next start every row still `queued` or `running` is queued again, and
//! its files resume from what the receiver already holds. Rows that ended
//! (`done`, `failed`, `cancelled`) are the history; those older than the
//! retention are deleted at start and once an hour. `paused` rows wait for
//! `resume`.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a committed state
//! change survives the agent's death (not necessarily the machine's power
//! loss, which costs at most the last changes; a job then runs again and
//! resumes).

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its turn.
    Queued,
    /// Moving data.
    Running,
    /// Stopped by the user; `resume` queues it again.
    Paused,
    /// Every file verified by the receiver.
    Done,
    /// Ended with an error.
    Failed,
    /// Stopped by the user for good.
    Cancelled,
}

impl State {
    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Paused,
            Self::Done,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the transfer has ended for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// One row: a send job or a received session.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Rising id.
    pub id: i64,
    /// `send` (a job of this agent) or `recv` (a session it received).
    pub direction: String,
    /// Current state.
    pub state: State,
    /// The peer: the receiver's address for a send, the sender's for a
    /// receive.
    pub peer: String,
    /// Number of files (0 until known).
    pub files: u64,
    /// Total bytes (0 until known).
    pub bytes: u64,
    /// Bytes acknowledged (send) or received (recv) so far.
    pub bytes_done: u64,
    /// Unix seconds.
    pub created: f64,
    /// Unix seconds of the latest start.
    pub started: Option<f64>,
    /// Unix seconds of the end.
    pub finished: Option<f64>,
    /// File bits per second of the finished transfer.
    pub goodput_bps: Option<f64>,
    /// FEC plane: recovery shards its blocks took beyond the up-front
    /// ones (a sent transfer that finished).
    pub repair_shards: Option<u64>,
    /// Per path (JSON): name, bytes, RTT, loss, at the end.
    pub paths: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
    /// The submitted job (send only; JSON).
    pub request: serde_json::Value,
}

impl Record {
    /// The record as JSON for the API and `history --json`, with the
    /// secrets of its request (token, ticket) replaced by `"redacted"`.
    pub fn to_public_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(req) = v.get_mut("request").and_then(|r| r.as_object_mut()) {
            for secret in ["token", "ticket"] {
                if let Some(s) = req.get_mut(secret) {
                    *s = "redacted".into();
                }
            }
        }
        v
    }
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: Mutex<Connection>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS transfers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    direction   TEXT NOT NULL,
    state       TEXT NOT NULL,
    peer        TEXT NOT NULL,
    files       INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    goodput_bps REAL,
    paths       TEXT NOT NULL DEFAULT '[]',
    error       TEXT,
    request     TEXT NOT NULL DEFAULT 'null',
    repair_shards INTEGER
);
CREATE INDEX IF NOT EXISTS transfers_state ON transfers(state);
";

const COLUMNS: &str = "id, direction, state, peer, files, bytes, bytes_done, created, started, finished, goodput_bps, paths, error, request, repair_shards";

/// Columns added since the first schema, added to an older database when
/// it is opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[("repair_shards", "INTEGER")];

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let s: String = row.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::Null))
    };
    let state: String = row.get(2)?;
    Ok(Record {
        id: row.get(0)?,
        direction: row.get(1)?,
        state: State::parse(&state).unwrap_or(State::Failed),
        peer: row.get(3)?,
        files: row.get::<_, i64>(4)?.max(0) as u64,
        bytes: row.get::<_, i64>(5)?.max(0) as u64,
        bytes_done: row.get::<_, i64>(6)?.max(0) as u64,
        created: row.get(7)?,
        started: row.get(8)?,
        finished: row.get(9)?,
        goodput_bps: row.get(10)?,
        paths: json(11)?,
        error: row.get(12)?,
        request: json(13)?,
        repair_shards: row.get::<_, Option<i64>>(14)?.map(|n| n.max(0) as u64),
    })
}

/// Bytes as SQLite's signed integer.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) `agent.sqlite` in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
        let path = state_dir.join("agent.sqlite");
        let setup = || -> rusqlite::Result<Connection> {
            let db = Connection::open(&path)?;
            db.busy_timeout(std::time::Duration::from_secs(5))?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "NORMAL")?;
            db.execute_batch(SCHEMA)?;
            let have: Vec<String> = db
                .prepare("SELECT name FROM pragma_table_info('transfers')")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for (name, kind) in ADDED_COLUMNS {
                if !have.iter().any(|h| h == name) {
                    db.execute_batch(&format!("ALTER TABLE transfers ADD COLUMN {name} {kind}"))?;
                }
            }
            Ok(db)
        };
        // A damaged file fails here, before the agent listens or prints
        // anything: it never runs half-way.
        let db = setup().with_context(|| {
            format!(
                "cannot use the agent's database {} (move it away to start afresh)",
                path.display()
            )
        })?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a queued send job; its id.
    pub fn add_job(&self, peer: &str, request: &serde_json::Value) -> Result<i64> {
        let db = self.db();
        db.execute(
            "INSERT INTO transfers (direction, state, peer, created, request) VALUES ('send', 'queued', ?1, ?2, ?3)",
            params![peer, unix_now(), request.to_string()],
        )?;
        Ok(db.last_insert_rowid())
    }

    /// Adds a received session, running; its id.
    pub fn add_received(&self, peer: &str, files: u64, bytes: u64) -> Result<i64> {
        let db = self.db();
        let now = unix_now();
        db.execute(
            "INSERT INTO transfers (direction, state, peer, files, bytes, created, started) VALUES ('recv', 'running', ?1, ?2, ?3, ?4, ?4)",
            params![peer, int(files), int(bytes), now],
        )?;
        Ok(db.last_insert_rowid())
    }

    /// One transfer.
    pub fn get(&self, id: i64) -> Result<Option<Record>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM transfers WHERE id = ?1"),
                [id],
                record,
            )
            .optional()?)
    }

    /// Transfers, newest first, optionally only in `state`; at most `limit`.
    pub fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<Record>> {
        let db = self.db();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match state {
            Some(s) => {
                let mut q = db.prepare(&format!(
                    "SELECT {COLUMNS} FROM transfers WHERE state = ?1 ORDER BY id DESC LIMIT ?2"
                ))?;
                q.query_map(params![s.as_str(), limit], record)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let mut q = db.prepare(&format!(
                    "SELECT {COLUMNS} FROM transfers ORDER BY id DESC LIMIT ?1"
                ))?;
                q.query_map([limit], record)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    /// At start: send jobs left `running` by an agent that died are queued
    /// again, and received sessions it left `running` failed.
    pub fn recover(&self) -> Result<()> {
        let db = self.db();
        db.execute(
            "UPDATE transfers SET state = 'queued' WHERE direction = 'send' AND state = 'running'",
            [],
        )?;
        db.execute(
            "UPDATE transfers SET state = 'failed', error = 'the agent stopped during the session', finished = ?1 WHERE direction = 'recv' AND state = 'running'",
            [unix_now()],
        )?;
        Ok(())
    }

    /// How many transfers are in `state`.
    pub fn count(&self, state: State) -> Result<usize> {
        let n: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM transfers WHERE state = ?1",
            [state.as_str()],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Queued send jobs, oldest first.
    pub fn queued_jobs(&self) -> Result<Vec<Record>> {
        let db = self.db();
        let mut q = db.prepare(&format!(
            "SELECT {COLUMNS} FROM transfers WHERE direction = 'send' AND state = 'queued' ORDER BY id"
        ))?;
        Ok(q.query_map([], record)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sets the state (and the start or end time that goes with it).
    pub fn set_state(&self, id: i64, state: State, error: Option<&str>) -> Result<()> {
        let now = unix_now();
        let db = self.db();
        match state {
            State::Running => db.execute(
                "UPDATE transfers SET state = ?2, started = ?3, error = NULL WHERE id = ?1",
                params![id, state.as_str(), now],
            )?,
            s if s.is_final() => db.execute(
                "UPDATE transfers SET state = ?2, finished = ?3, error = ?4 WHERE id = ?1",
                params![id, state.as_str(), now, error],
            )?,
            _ => db.execute(
                "UPDATE transfers SET state = ?2, error = ?3 WHERE id = ?1",
                params![id, state.as_str(), error],
            )?,
        };
        Ok(())
    }

    /// Records the size of a job once its files are listed.
    pub fn set_size(&self, id: i64, files: u64, bytes: u64) -> Result<()> {
        self.db().execute(
            "UPDATE transfers SET files = ?2, bytes = ?3 WHERE id = ?1",
            params![id, int(files), int(bytes)],
        )?;
        Ok(())
    }

    /// Records progress.
    pub fn set_progress(&self, id: i64, bytes_done: u64) -> Result<()> {
        self.db().execute(
            "UPDATE transfers SET bytes_done = ?2 WHERE id = ?1",
            params![id, int(bytes_done)],
        )?;
        Ok(())
    }

    /// Records the outcome figures of a finished transfer.
    pub fn set_outcome(&self, id: i64, goodput_bps: f64, paths: &serde_json::Value) -> Result<()> {
        self.db().execute(
            "UPDATE transfers SET goodput_bps = ?2, paths = ?3 WHERE id = ?1",
            params![id, goodput_bps, paths.to_string()],
        )?;
        Ok(())
    }

    /// The recovery shards a finished send's blocks took beyond the
    /// up-front ones.
    pub fn set_repair_shards(&self, id: i64, n: u64) -> Result<()> {
        self.db().execute(
            "UPDATE transfers SET repair_shards = ?2 WHERE id = ?1",
            params![id, int(n)],
        )?;
        Ok(())
    }

    /// Deletes ended transfers that finished more than `days` ago; how many.
    pub fn prune(&self, days: f64) -> Result<usize> {
        let cutoff = unix_now() - days * 86_400.0;
        Ok(self.db().execute(
            "DELETE FROM transfers WHERE state IN ('done', 'failed', 'cancelled') AND finished < ?1",
            [cutoff],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_survive_a_reopen_and_running_ones_are_queued_again() {
        // (A received session left running fails instead; see `recover`.)
        let dir = tempfile::tempdir().unwrap();
        let request = serde_json::json!({"inputs": ["/tmp/x"]});
        let (a, b, c) = {
            let s = Store::open(dir.path()).unwrap();
            let a = s.add_job("127.0.0.1:1", &request).unwrap();
            let b = s.add_job("127.0.0.1:2", &request).unwrap();
            let c = s.add_job("127.0.0.1:3", &request).unwrap();
            s.set_state(a, State::Running, None).unwrap();
            s.set_state(c, State::Done, None).unwrap();
            (a, b, c)
        };
        let s = Store::open(dir.path()).unwrap();
        s.recover().unwrap();
        let ids: Vec<i64> = s.queued_jobs().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [a, b]);
        assert_eq!(s.get(a).unwrap().unwrap().state, State::Queued);
        assert_eq!(s.get(c).unwrap().unwrap().state, State::Done);
        assert_eq!(s.get(a).unwrap().unwrap().request, request);
        assert!(s.get(999).unwrap().is_none());
    }

    #[test]
    fn listing_filters_by_state_and_pruning_keeps_what_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_job("p", &serde_json::Value::Null).unwrap();
        let b = s.add_received("q", 2, 10).unwrap();
        s.set_state(a, State::Failed, Some("disk full")).unwrap();
        let failed = s.list(Some(State::Failed), 10).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].error.as_deref(), Some("disk full"));
        assert_eq!(s.count(State::Failed).unwrap(), 1);
        assert_eq!(s.count(State::Queued).unwrap(), 0);
        assert_eq!(s.list(None, 10).unwrap().len(), 2);
        // Pruning everything that ended (a retention of -1 day) keeps the
        // running receive.
        assert_eq!(s.prune(-1.0).unwrap(), 1);
        let left: Vec<i64> = s.list(None, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, [b]);
    }

    #[test]
    fn a_database_of_an_older_agent_gains_the_new_columns_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema before `repair_shards`, with one finished job.
            let db = Connection::open(dir.path().join("agent.sqlite")).unwrap();
            db.execute_batch(&SCHEMA.replace(",\n    repair_shards INTEGER", ""))
                .unwrap();
            db.execute(
                "INSERT INTO transfers (direction, state, peer, created) VALUES ('send', 'done', 'p', 1.0)",
                [],
            )
            .unwrap();
            let columns: i64 = db
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('transfers')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(columns, 14, "the old schema");
        }
        let s = Store::open(dir.path()).unwrap();
        let old = s.list(None, 10).unwrap();
        assert_eq!((old.len(), old[0].repair_shards), (1, None));
        s.set_repair_shards(old[0].id, 12).unwrap();
        assert_eq!(s.get(old[0].id).unwrap().unwrap().repair_shards, Some(12));
        // Opening it again changes nothing.
        drop(s);
        assert!(Store::open(dir.path()).is_ok());
    }
}
