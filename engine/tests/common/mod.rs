//! What the engine's integration tests share: a receiver serving on
//! loopback in the test's runtime with its events recorded, and source
//! files of pseudo-random bytes beside it.

#![allow(dead_code)] // each test file uses what it needs

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chunkstream_engine::manifest::SourceFile;
use chunkstream_engine::session::{Receiver, RecvEvent};
use chunkstream_engine::transport::Tuning;
use chunkstream_engine::transport::identity::{Fingerprint, Identity};

/// A receiver serving for ever (until the test's runtime ends).
pub struct Setup {
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// Every event it reported so far.
    pub events: Arc<Mutex<Vec<RecvEvent>>>,
    /// Its output folder.
    pub out: PathBuf,
    /// Where [`Setup::source`] writes.
    pub src: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Setup {
    /// Binds a receiver taking `token` on loopback, lets `configure` set
    /// its limits, and serves it in the current runtime.
    pub fn serve(token: &str, configure: impl FnOnce(&mut Receiver)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let identity = Identity::generate().unwrap();
        let mut receiver = Receiver::bind(
            &["127.0.0.1:0".parse().unwrap()],
            &out,
            token.into(),
            &identity,
            &Tuning::default(),
        )
        .unwrap();
        configure(&mut receiver);
        let addr = receiver.local_addrs()[0];
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        tokio::spawn(async move {
            let _ = receiver
                .serve(false, move |e| seen.lock().unwrap().push(e))
                .await;
        });
        Self {
            addr,
            fingerprint: identity.fingerprint(),
            events,
            out,
            src,
            _tmp: tmp,
        }
    }

    /// A file of `size` pseudo-random bytes named `name`, as a source.
    pub fn source(&self, name: &str, size: usize, seed: u8) -> SourceFile {
        let path = self.src.join(name);
        let bytes: Vec<u8> = (0..size)
            .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        std::fs::write(&path, bytes).unwrap();
        SourceFile {
            path,
            name: name.into(),
            size: size as u64,
        }
    }

    /// Asserts that `name` arrived equal to its source.
    pub fn assert_arrived(&self, name: &str) {
        assert_eq!(
            blake3_of(&self.out.join(name)),
            blake3_of(&self.src.join(name)),
            "{name} differs"
        );
    }
}

/// BLAKE3 of a whole file.
pub fn blake3_of(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}
