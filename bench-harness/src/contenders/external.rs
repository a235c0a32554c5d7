//! Running a program no one here wrote (iperf3, rsync, sshd) and measuring
//! what it cost.
//!
//! [`run_tool`] starts the program, samples the peak RSS of its process
//! tree (`VmHWM` in `/proc/PID/status` of the tool and its descendants; the
//! largest single process, not a sum) every 50 ms, and kills it at the time
//! limit. CPU time is the growth
//! of this process's `cutime + cstime` (children it has waited for,
//! including their own waited-for children such as the `ssh` that `rsync`
//! starts), so the wrapper's own CPU is not counted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::usage::{CpuOf, ProcessUsage, cpu_seconds, peak_rss};

/// What a finished tool printed and cost.
#[derive(Debug)]
pub struct ToolRun {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// CPU time of the tool and its waited-for children, peak RSS of the tool.
    pub usage: ProcessUsage,
}

impl ToolRun {
    /// Fails with the tool's own words unless it exited with 0.
    pub fn ok(self, what: &str) -> Result<Self> {
        if self.code != Some(0) {
            let said = if self.stderr.trim().is_empty() {
                self.stdout.trim()
            } else {
                self.stderr.trim()
            };
            bail!(
                "{what} exited with {}: {}",
                self.code.map_or("a signal".into(), |c| c.to_string()),
                said.lines().last().unwrap_or("(no output)")
            );
        }
        Ok(self)
    }
}

/// CPU seconds of this process's waited-for children (`cutime + cstime`).
fn children_cpu_seconds() -> f64 {
    cpu_seconds("self", CpuOf::WaitedChildren).unwrap_or(0.0)
}

/// `pid` and its descendants, from `/proc/PID/task/TID/children`
/// (bounded: at most 64 processes).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < 64 {
        let p = tree[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                tree.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    tree
}

/// The largest peak RSS of any process in `pid`'s tree right now.
pub fn tree_peak_rss(pid: u32) -> u64 {
    process_tree(pid)
        .into_iter()
        .filter_map(|p| peak_rss(&p.to_string()))
        .max()
        .unwrap_or(0)
}

/// Peak RSS of a tool's process tree, and CPU of what it reaped, for tools
/// that are stopped rather than left to finish (a server).
#[derive(Debug)]
pub struct UsageMeter {
    cpu_before: f64,
    peak: u64,
}

impl UsageMeter {
    /// Starts measuring (call before spawning the tool).
    pub fn start() -> Self {
        Self {
            cpu_before: children_cpu_seconds(),
            peak: 0,
        }
    }

    /// Samples the peak RSS of `pid`'s tree.
    pub fn sample(&mut self, pid: u32) {
        self.peak = self.peak.max(tree_peak_rss(pid));
    }

    /// The usage so far (call after the tool was reaped).
    pub fn usage(&self) -> ProcessUsage {
        ProcessUsage {
            cpu_seconds: children_cpu_seconds() - self.cpu_before,
            peak_rss_bytes: self.peak,
        }
    }
}

/// Runs `cmd` to completion (killed after `limit`), capturing its output.
pub fn run_tool(mut cmd: Command, limit: Duration) -> Result<ToolRun> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut meter = UsageMeter::start();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program} (is it installed?)"))?;
    // Drain both pipes on threads so a chatty tool never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        meter.sample(child.id());
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(ToolRun {
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        usage: meter.usage(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_exit_code_and_cpu_are_captured() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo out; echo err >&2; exit 3",
        ]);
        let run = run_tool(cmd, Duration::from_secs(30)).unwrap();
        assert_eq!(run.code, Some(3));
        assert_eq!(run.stdout, "out\n");
        assert_eq!(run.stderr, "err\n");
        assert!(run.usage.cpu_seconds > 0.0, "{:?}", run.usage);
        let err = run.ok("sh").unwrap_err().to_string();
        assert_eq!(err, "sh exited with 3: err");
    }

    #[test]
    fn a_missing_program_and_a_slow_one_are_clear_errors() {
        let err = run_tool(Command::new("no-such-tool-xyz"), Duration::from_secs(1)).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot start no-such-tool-xyz"),
            "{err:#}"
        );
        let mut cmd = Command::new("sleep");
        cmd.arg("10");
        let started = Instant::now();
        let err = run_tool(cmd, Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
