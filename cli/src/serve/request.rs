//! A job as the API submits it, and its checks: everything that can be
//! checked before dialling (inputs exist and can be listed, destination
//! and credentials are well-formed), turned into the engine's sender
//! settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use chunkstream_engine::manifest::{SourceFile, collect_sources};
use chunkstream_engine::multipath::priority::Class;
use chunkstream_engine::multipath::spec::{PathSpec, parse_rate};
use chunkstream_engine::session::SendConfig;
use chunkstream_engine::ticket::Ticket;
use chunkstream_engine::transport::Congestion;
use chunkstream_engine::transport::identity::Fingerprint;
use serde::{Deserialize, Serialize};

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

/// Checks that every source lies in one of the folders `allow` (canonical
/// paths), symbolic links resolved, and has the reader open the resolved
/// path. The error names the first file outside.
pub fn confine(sources: &mut [SourceFile], allow: &[PathBuf]) -> Result<(), String> {
    if allow.is_empty() {
        return Err(
            "this agent sends nothing: it was started without --allow DIR (the folders it may send from)"
                .into(),
        );
    }
    for s in sources {
        let real = std::fs::canonicalize(&s.path)
            .map_err(|e| format!("cannot resolve {}: {e}", s.path.display()))?;
        if !allow.iter().any(|d| real.starts_with(d)) {
            return Err(format!(
                "{} is outside the folders this agent may send from (--allow)",
                s.path.display()
            ));
        }
        s.path = real;
    }
    Ok(())
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

/// The order classes are served in, highest first.
pub fn rank(c: Class) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(json: serde_json::Value) -> Result<JobRequest, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn only_files_inside_the_allowed_folders_may_be_sent() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(inside.join("a"), b"a").unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        // A link inside pointing outside is outside.
        std::os::unix::fs::symlink(outside.join("secret"), inside.join("link")).unwrap();
        let allow = [std::fs::canonicalize(&inside).unwrap()];
        let mut ok = collect_sources(&[inside.join("a")]).unwrap();
        confine(&mut ok, &allow).unwrap();
        assert_eq!(ok[0].path, allow[0].join("a"));
        for p in [
            outside.join("secret"),
            inside.join("link"),
            inside.join("../out/secret"),
        ] {
            let mut s = collect_sources(std::slice::from_ref(&p)).unwrap();
            let e = confine(&mut s, &allow).unwrap_err();
            assert!(e.contains("outside the folders"), "{p:?}: {e}");
        }
        let e = confine(&mut collect_sources(&[inside.join("a")]).unwrap(), &[]).unwrap_err();
        assert!(e.contains("--allow"), "{e}");
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
