//! `chunkstream-engine history`: the transfers an agent (`serve`) sent and
//! received, from its database, newest first.

use std::path::PathBuf;

use anyhow::Result;

use super::store::{State, Store};
use crate::output::json_line;

/// List past and current transfers of the agent (`serve`) on this host.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The agent's state folder [default: as `serve`].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only transfers in this state (queued, running, paused, done, failed,
    /// cancelled).
    #[arg(long, value_name = "STATE", value_parser = state)]
    pub state: Option<State>,
    /// At most this many, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

fn state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        format!("{s:?}: expected queued, running, paused, done, failed or cancelled")
    })
}

pub fn run(args: HistoryArgs) -> Result<()> {
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::recv::default_state_dir);
    if !dir.join("agent.sqlite").exists() {
        anyhow::bail!(
            "no agent history in {} (it is kept by `chunkstream-engine serve`)",
            dir.display()
        );
    }
    let store = Store::open(&dir)?;
    let rows = store.list(args.state, args.limit)?;
    if args.json {
        for r in &rows {
            json_line(&r.to_public_json());
        }
        return Ok(());
    }
    println!(
        "{:>5}  {:<4}  {:<9}  {:<22}  {:>5}  {:>12}  {:>9}  {:>12}  ERROR",
        "ID", "DIR", "STATE", "PEER", "FILES", "BYTES", "SECONDS", "MBIT/S"
    );
    for r in &rows {
        let seconds = match (r.started, r.finished) {
            (Some(s), Some(f)) => format!("{:.2}", f - s),
            _ => "-".into(),
        };
        let goodput = r
            .goodput_bps
            .map_or("-".into(), |g| format!("{:.1}", g / 1e6));
        println!(
            "{:>5}  {:<4}  {:<9}  {:<22}  {:>5}  {:>12}  {:>9}  {:>12}  {}",
            r.id,
            r.direction,
            r.state.as_str(),
            r.peer,
            r.files,
            r.bytes,
            seconds,
            goodput,
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
