//! TLS for the device listeners (MQTT's `tls_listen`, and NATS when `nats.tls_cert` is set: every
//! client upgrades after INFO): a rustls server configuration (ring provider, TLS 1.2 and 1.3)
//! from a PEM certificate chain and a PEM private key, optionally requiring client
//! certificates from a given CA (mutual TLS).
//!
//! The files are read when the config is validated (so `edge-broker check` names a bad file),
//! when the listener starts, and on every reload (SIGHUP): a certificate renewed on disk is used
//! for connections accepted after the reload ([`AcceptorCell`]), without dropping any.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("certificate chain {}: {message}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key file is missing, unreadable or holds no PEM private key.
    #[error("private key {}: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The client CA file is missing, unreadable or holds no usable CA certificate.
    #[error("client CA {}: {message}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not belong to the certificate).
    #[error("certificate {} with key {}: {message}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        message: String,
    },
}

/// The acceptor a listener uses for its next connections; a reload replaces it.
#[derive(Default)]
pub struct AcceptorCell(RwLock<Option<TlsAcceptor>>);

impl std::fmt::Debug for AcceptorCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.current().is_some() {
            "AcceptorCell(TLS)"
        } else {
            "AcceptorCell(off)"
        })
    }
}

impl AcceptorCell {
    /// The acceptor for a connection accepted now; `None` while TLS is off.
    pub fn current(&self) -> Option<TlsAcceptor> {
        self.0.read().clone()
    }

    /// Replaces the acceptor (connections already accepted keep theirs).
    pub fn replace(&self, acceptor: Option<TlsAcceptor>) {
        *self.0.write() = acceptor;
    }

    /// Loads `cert`/`key`/`client_ca` again (all set) or turns TLS off (no `cert`), logging what
    /// it did; a file that no longer loads keeps the acceptor in use.
    pub fn reload(
        &self,
        listener: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) {
        match (cert, key) {
            (Some(cert), Some(key)) => match acceptor(cert, key, client_ca) {
                Ok(acceptor) => {
                    self.replace(Some(acceptor));
                    tracing::info!(
                        "reload: {listener} TLS certificate loaded from {}",
                        cert.display()
                    );
                }
                Err(err) => {
                    tracing::error!("reload: {listener} keeps its TLS certificate: {err}");
                }
            },
            _ => self.replace(None),
        }
    }
}

/// Builds the acceptor for a TLS listener from PEM files: `cert` holds the server certificate
/// first, then any intermediates; `key` holds its PKCS#8, PKCS#1 or SEC1 private key. With
/// `client_ca`, every client must present a certificate issued by one of its CAs (mutual TLS).
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |message: String| TlsError::Certificate {
        path: cert.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no PEM CERTIFICATE block in the file".to_owned(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let pair_error = |e: rustls::Error| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(pair_error)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .map_err(pair_error)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A verifier accepting client certificates issued by the CAs in the PEM file at `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let ca_error = |message: String| TlsError::ClientCa {
        path: path.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
        roots
            .add(cert.map_err(|e| ca_error(e.to_string()))?)
            .map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no PEM CERTIFICATE block in the file".to_owned()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| ca_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = acceptor(&missing, &missing, None).err().unwrap();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = acceptor(&empty, &missing, None).err().unwrap();
        assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    }

    #[test]
    fn a_matching_pair_builds_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        let other_path = dir.path().join("other.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(
            &other_path,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        acceptor(&cert_path, &key_path, None).unwrap();
        acceptor(&cert_path, &key_path, Some(&cert_path)).unwrap();
        let err = acceptor(&cert_path, &key_path, Some(&key_path))
            .err()
            .unwrap();
        assert!(matches!(err, TlsError::ClientCa { .. }), "{err}");
        let err = acceptor(&cert_path, &other_path, None).err().unwrap();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
    }
}
