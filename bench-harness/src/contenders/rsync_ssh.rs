//! rsync over SSH: what many users reach for first.
//!
//! The receiving side runs a private `sshd` (its own host key, config and
//! authorized key in a state folder; nothing of the machine's SSH setup is
//! read or changed) on the far side of the emulated link; the sender runs
//! `rsync -e ssh FILE root@ADDR:DEST/` with a client key made for the
//! occasion. rsync writes into a dot-named temporary file and renames it
//! when the file is complete, so the server knows it is done when a file
//! without a leading dot appears in `DEST`. The bench then hashes that file
//! like any other contender's.
//!
//! ssh gives no per-socket congestion control, so the sender sets its
//! network namespace's default (`net.ipv4.tcp_congestion_control`, a
//! per-namespace setting) when asked, and reports the one in force. It never
//! changes the host's setting: [`send`] refuses to unless it runs in a
//! namespace made with `ip netns`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::external::{UsageMeter, run_tool};
use crate::usage::ProcessUsage;

const CC_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Key and config files of the private sshd, in one state folder.
#[derive(Debug, Clone)]
pub struct SshFiles {
    dir: PathBuf,
}

impl SshFiles {
    /// Creates (once) the host key, the client key and its authorization.
    pub fn prepare(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let files = Self {
            dir: dir.to_owned(),
        };
        for key in [files.host_key(), files.client_key()] {
            if !key.exists() {
                let run = run_tool(
                    {
                        let mut c = Command::new("ssh-keygen");
                        c.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key);
                        c
                    },
                    Duration::from_secs(10),
                )?;
                run.ok("ssh-keygen")?;
            }
        }
        std::fs::copy(
            files.client_key().with_extension("pub"),
            files.dir.join("authorized_keys"),
        )?;
        Ok(files)
    }

    fn host_key(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    /// The private key the sender logs in with.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    fn config(&self, listen: SocketAddr) -> Result<PathBuf> {
        let path = self.dir.join(format!("sshd_config.{}", listen.port()));
        let text = format!(
            "ListenAddress {listen}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PidFile none\nLogLevel ERROR\n",
            self.host_key().display(),
            self.dir.join("authorized_keys").display()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

fn sshd_program() -> Result<PathBuf> {
    // sshd re-executes itself and insists on an absolute path.
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("sshd not found (install openssh-server)")
}

/// A private sshd, killed on drop.
#[derive(Debug)]
pub struct SshServer {
    child: Child,
    meter: UsageMeter,
    listen: SocketAddr,
}

impl SshServer {
    /// Starts sshd on `listen` and returns once it accepts connections
    /// (bounded: 5 s).
    pub fn start(files: &SshFiles, listen: SocketAddr) -> Result<Self> {
        // Privilege separation wants this folder; a fresh container lacks it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = files.config(listen)?;
        let meter = UsageMeter::start();
        let child = Command::new(sshd_program()?)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start sshd")?;
        let mut server = Self {
            child,
            meter,
            listen,
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("sshd exited with {status}: {}", err.trim());
            }
            if started.elapsed() > Duration::from_secs(5) {
                bail!("sshd did not listen on {listen} within 5 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Waits (bounded) until a complete file (no leading dot) appears in
    /// `dest`, then for the session that wrote it to end; returns its path.
    pub fn wait_for_file(&mut self, dest: &Path, limit: Duration) -> Result<PathBuf> {
        let started = Instant::now();
        loop {
            self.meter.sample(self.child.id());
            let found = std::fs::read_dir(dest).ok().and_then(|entries| {
                entries
                    .flatten()
                    .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
            });
            if let Some(path) = found {
                // The session (sshd child, rsync server) ends right after
                // the rename; give it a moment so its CPU is reaped.
                let settle = Instant::now();
                while super::external::process_tree(self.child.id()).len() > 1
                    && settle.elapsed() < Duration::from_secs(3)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(path);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("sshd exited with {status} before a file arrived");
            }
            if started.elapsed() > limit {
                bail!(
                    "no file arrived in {} within {} s",
                    dest.display(),
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sshd and returns what it and its sessions used.
    pub fn stop(mut self) -> ProcessUsage {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.meter.usage()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one rsync run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RsyncReport {
    /// Start of rsync to its exit.
    pub seconds: f64,
    /// The TCP congestion controller in force for ssh's connection.
    pub congestion: String,
    /// CPU of rsync and ssh, peak RSS of the larger.
    pub usage: ProcessUsage,
}

/// The name of the `ip netns` namespace this process is in, if any: the
/// entry of `/run/netns` whose inode is that of `/proc/self/ns/net` (what
/// `ip netns identify` does).
fn named_netns() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net").ok()?;
    std::fs::read_dir("/run/netns")
        .ok()?
        .flatten()
        .find_map(|e| {
            let m = std::fs::metadata(e.path()).ok()?;
            (m.dev() == own.dev() && m.ino() == own.ino())
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Sends `file` to `dest` on the server at `to` with rsync over ssh. With
/// `cc`, sets this network namespace's default TCP congestion controller
/// first (refused outside a named `ip netns` namespace, so the host's
/// setting is never touched).
pub fn send(
    file: &Path,
    to: SocketAddr,
    key: &Path,
    dest: &Path,
    cc: Option<&str>,
    limit: Duration,
) -> Result<RsyncReport> {
    if !file.is_file() {
        bail!("cannot read {}: not a file", file.display());
    }
    if let Some(cc) = cc {
        if named_netns().is_none() {
            bail!(
                "will not change the host's TCP congestion control; run rsync-send inside a namespace made with `ip netns`"
            );
        }
        std::fs::write(CC_SYSCTL, cc).with_context(|| format!("cannot set {CC_SYSCTL} to {cc}"))?;
    }
    let congestion = std::fs::read_to_string(CC_SYSCTL)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let user = if crate::usage::running_as_root() {
        "root".to_owned()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    };
    let ssh = format!(
        "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
        key.display(),
        to.port()
    );
    let started = Instant::now();
    let mut cmd = Command::new("rsync");
    cmd.arg("-e")
        .arg(ssh)
        .arg(file)
        .arg(format!("{user}@{}:{}/", to.ip(), dest.display()));
    let run = run_tool(cmd, limit)?.ok("rsync")?;
    Ok(RsyncReport {
        seconds: started.elapsed().as_secs_f64(),
        congestion,
        usage: run.usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(program: &str) -> bool {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// A real sshd and rsync on loopback (root, as sshd needs; CI runs it).
    #[test]
    fn a_file_crosses_loopback_and_arrives_whole() {
        let ci = std::env::var_os("CI").is_some();
        if !crate::usage::running_as_root() || !have("rsync") || sshd_program().is_err() {
            assert!(
                !ci,
                "CI runs as root with rsync and openssh-server installed"
            );
            eprintln!("skipped: needs root, rsync and sshd");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let files = SshFiles::prepare(&tmp.path().join("ssh")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server =
            SshServer::start(&files, format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
        let src = tmp.path().join("payload.bin");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let err = send(
            &src,
            server.addr(),
            &files.client_key(),
            &dest,
            Some("bbr"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("will not change the host"),
            "{err}"
        );
        let r = send(
            &src,
            server.addr(),
            &files.client_key(),
            &dest,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        let got = server
            .wait_for_file(&dest, Duration::from_secs(10))
            .unwrap();
        let usage = server.stop();
        assert_eq!(got, dest.join("payload.bin"));
        assert_eq!(
            blake3::hash(&std::fs::read(&got).unwrap()),
            blake3::hash(&data)
        );
        assert!(!r.congestion.is_empty());
        assert!(r.usage.peak_rss_bytes > 0, "{r:?}");
        assert!(usage.peak_rss_bytes > 0, "{usage:?}");
    }
}
