//! Who the receiver is, and how the sender makes sure it talks to that host.
//!
//! A receiver keeps one [`Identity`] (an ECDSA P-256 key pair and a
//! self-signed certificate) in its state folder, created on first start and
//! reused afterwards, so its [`Fingerprint`] stays the same across restarts.
//! The fingerprint is the BLAKE3 hash of the certificate's DER bytes, printed
//! as 64 hex digits.
//!
//! The sender does not use any certificate authority: [`PinnedCertVerifier`]
//! accepts exactly the certificate whose fingerprint the user passed with
//! `--peer`, checks the TLS 1.3 handshake signature against it, and records a
//! mismatch so the sender can say which fingerprint it got instead.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// Errors loading or creating an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the state folder failed.
    #[error("state folder {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Key generation failed.
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

/// BLAKE3 of a certificate's DER encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        Self(*blake3::hash(cert_der).as_bytes())
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a `--peer` value is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 64 hexadecimal digits (as printed by `recv`), got {0:?}")]
pub struct BadFingerprint(pub String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(s.to_owned());
        let hex: String = s.trim().chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// A receiver's persistent key pair and self-signed certificate.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    const CERT: &'static str = "cert.der";
    const KEY: &'static str = "key.der";

    /// Loads the identity from `state_dir`, creating it (and the folder,
    /// mode 0700; the key file, mode 0600) on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { path, source }
        };
        let (cert_path, key_path) = (state_dir.join(Self::CERT), state_dir.join(Self::KEY));
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            return Ok(Self {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io(state_dir))?;
        let generated = Self::generate()?;
        let write = |path: &Path, bytes: &[u8], mode: u32| -> Result<(), IdentityError> {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))
        };
        write(&key_path, generated.key.secret_pkcs8_der(), 0o600)?;
        write(&cert_path, &generated.cert, 0o644)?;
        Ok(generated)
    }

    /// A fresh identity that is not stored anywhere (tests, `demo`).
    pub fn generate() -> Result<Self, IdentityError> {
        let ck = rcgen::generate_simple_self_signed(vec!["chunkstream".to_owned()])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok(Self {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()),
        })
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    pub(crate) fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Accepts exactly one certificate: the pinned one.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// The fingerprint a mismatching peer presented.
    pub mismatch: Mutex<Option<Fingerprint>>,
}

impl PinnedCertVerifier {
    /// A verifier that accepts only `expected`.
    pub fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self {
            expected,
            provider,
            mismatch: Mutex::new(None),
        }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        *self.mismatch.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
        Err(rustls::Error::General(format!(
            "certificate fingerprint {got} does not match the pinned {}",
            self.expected
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_across_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let a = Identity::load_or_create(&dir).unwrap();
        let b = Identity::load_or_create(&dir).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mode = std::fs::metadata(dir.join("key.der"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_ne!(a.fingerprint(), Identity::generate().unwrap().fingerprint());
    }

    #[test]
    fn fingerprints_parse_back() {
        let f = Identity::generate().unwrap().fingerprint();
        assert_eq!(f.to_string().parse::<Fingerprint>(), Ok(f));
        assert_eq!(f.to_string().to_uppercase().parse::<Fingerprint>(), Ok(f));
        for bad in ["", "abc", &"g".repeat(64), &"é".repeat(32)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }
}
