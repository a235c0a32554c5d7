//! Helpers for end-to-end tests: real `chunkstream-engine` processes on
//! loopback, and file checks by BLAKE3 (and `b3sum` where installed).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary needs it
pub use chunkstream_bench_harness::usage::running_as_root as is_root;

pub const BIN: &str = env!("CARGO_BIN_EXE_chunkstream-engine");

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns true) outside CI with a printed reason; under CI a
/// missing prerequisite is a failure.
pub fn skip_unless(condition: bool, reason: &str) -> bool {
    if condition {
        return false;
    }
    assert!(!in_ci(), "CI=true but {reason}");
    eprintln!("SKIPPED: {reason}");
    true
}

/// A receiver process; killed when dropped.
pub struct Receiver {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    pub token: String,
    /// The one-string ticket it printed.
    pub ticket: String,
    pub out: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

/// Copies everything `r` yields into a shared string until EOF, so that a
/// chatty child never blocks on a full pipe.
fn drain(mut r: impl Read + Send + 'static) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (buf, handle)
}

impl Receiver {
    pub fn start(out: &Path, state: &Path, extra: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["recv", "--listen", "127.0.0.1:0", "--json", "--out"])
            .arg(out)
            .arg("--state-dir")
            .arg(state)
            .args(extra);
        Self::spawn(cmd, out)
    }

    /// Starts a receiver from a prepared command that prints `recv --json`.
    pub fn spawn(mut cmd: Command, out: &Path) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("receiver's first line is not JSON ({e}): {line:?}"));
        assert_eq!(v["event"], "listening");
        let (stdout, d1) = drain(stdout);
        let (stderr, d2) = drain(child.stderr.take().unwrap());
        Self {
            addr: v["addresses"][0].as_str().unwrap().to_owned(),
            fingerprint: v["fingerprint"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
            ticket: v["ticket"].as_str().unwrap_or_default().to_owned(),
            out: out.to_owned(),
            child,
            stdout,
            stderr,
            drains: vec![d1, d2],
        }
    }

    /// `send` arguments that reach this receiver.
    pub fn send_args(&self) -> Vec<String> {
        vec![
            "--to".into(),
            self.addr.clone(),
            "--peer".into(),
            self.fingerprint.clone(),
            "--token".into(),
            self.token.clone(),
        ]
    }

    /// Waits for the process to exit (bounded) and returns status, stdout
    /// (after the listening line) and stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let status = wait_bounded(&mut self.child, limit);
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        (status, self.stdout(), self.stderr())
    }

    /// Kills the receiver and returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        self.stderr()
    }

    /// What the receiver printed on stdout so far (after the listening line).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the receiver printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `send` to completion (bounded), reading its output as it goes.
pub fn send(args: &[String], limit: Duration) -> Output {
    let child = Command::new(BIN)
        .arg("send")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sender");
    finish(child, limit)
}

/// Collects a child's output, killing it if it outlives `limit`.
pub fn finish(child: Child, limit: Duration) -> Output {
    collect(child, limit)()
}

/// Starts reading a child's output at once, so that a chatty child (`send
/// --json` prints a progress line five times a second) never blocks on a
/// full pipe while the test does something else; the closure waits for it
/// to exit, killing it if it outlives `limit` from now.
pub fn collect(child: Child, limit: Duration) -> impl FnOnce() -> Output {
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    move || match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("process {pid} did not exit within {limit:?}");
        }
    }
}

/// Fails the test with the process's stderr unless it exited 0.
#[track_caller]
pub fn assert_success(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON object on the last line of stdout.
pub fn last_json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line not JSON ({e}): {line:?}"))
}

/// Deterministic, incompressible content.
pub fn write_file(path: &Path, len: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut xof = blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
        left -= n as u64;
    }
}

pub fn blake3_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    h.finalize().to_hex().to_string()
}

/// `b3sum` of a file, if the tool is installed (required under CI).
pub fn b3sum(path: &Path) -> Option<String> {
    match Command::new("b3sum").arg("--no-names").arg(path).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => {
            assert!(!in_ci(), "CI=true but b3sum is not installed");
            None
        }
    }
}

/// Asserts that `received` is byte-identical to `source`: BLAKE3 computed
/// here, and `b3sum` where installed.
pub fn assert_same_file(source: &Path, received: &Path) {
    let want = blake3_file(source);
    assert_eq!(
        blake3_file(received),
        want,
        "{} differs",
        received.display()
    );
    if let (Some(a), Some(b)) = (b3sum(source), b3sum(received)) {
        assert_eq!(a, want, "b3sum disagrees with blake3 on the source");
        assert_eq!(b, want, "b3sum of {} differs", received.display());
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An emulated link of `rate_mbit` Mbit/s, 5 ms one way, losing `loss` of
/// its packets (Bernoulli), with the model's default queue.
pub fn link(rate_mbit: u64, loss: f64) -> chunkstream_bench_harness::link::LinkConfig {
    use chunkstream_bench_harness::link::{LinkConfig, LossModel};
    let rate = rate_mbit * 1_000_000;
    let delay = Duration::from_millis(5);
    LinkConfig {
        rate_bps: Some(rate),
        queue_bytes: LinkConfig::default_queue_bytes(rate, delay),
        delay,
        loss: LossModel::Bernoulli { p: loss },
        ..LinkConfig::default()
    }
}

/// A temporary folder in RAM (`/dev/shm`) where there is one, for tests
/// that bound a rate: a receiver writing to disk competes with writeback
/// (the build before them in CI leaves gigabytes dirty). A clean-clone CI
/// run measured the netns lossy test at 0.58 of its capacity where runs
/// here give 0.73-0.86, and the loopback lossy test at 0.46 (bound 0.5).
pub fn ram_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Flushes the freshly written source to disk, so that writeback does not
/// compete with the transfer it feeds (one run of the netns lossy test lost
/// 20 % of its goodput to it: 410 instead of ~518 Mbit/s).
pub fn settle_writeback() {
    let _ = Command::new("sync").status();
}
