//! TLS to Kafka brokers (Kafka's `SSL` security protocol): a rustls client configuration (ring
//! provider, TLS 1.2 and 1.3) trusting the CAs of a PEM file — the system bundle unless one is
//! given — and optionally presenting a client certificate (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use super::error::ProduceError;

/// Debian's (and most distributions') bundle of trusted CAs, used when no `ca` file is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the TLS material comes from (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates that may sign the brokers' certificates; [`SYSTEM_CA_BUNDLE`] if unset.
    pub ca: Option<PathBuf>,
    /// Client certificate chain for brokers that require one (with `key`).
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Builds the connector for `settings`; the error names the file that does not load.
pub fn connector(settings: &TlsSettings) -> Result<TlsConnector, ProduceError> {
    let ca = settings
        .ca
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| tls_error(&ca, e))? {
        roots
            .add(cert.map_err(|e| tls_error(&ca, e))?)
            .map_err(|e| tls_error(&ca, e))?;
    }
    if roots.is_empty() {
        return Err(tls_error(&ca, "no PEM CERTIFICATE block in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&ca, e))?
        .with_root_certificates(roots);
    let config = match (&settings.cert, &settings.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_error(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(cert, e))?;
            let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| tls_error(cert, e))?
        }
        (Some(path), None) | (None, Some(path)) => {
            return Err(tls_error(
                path,
                "a client certificate needs both a certificate and its key",
            ));
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name to verify a broker's certificate against: the host part of `host:port` (a DNS
/// name or an IP address).
pub(crate) fn server_name(broker: &str) -> Result<ServerName<'static>, ProduceError> {
    let host = broker.rsplit_once(':').map_or(broker, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| ProduceError::Tls {
        message: format!("{broker}: {host:?} is not a DNS name or IP address: {e}"),
    })
}

fn tls_error(path: &Path, e: impl std::fmt::Display) -> ProduceError {
    ProduceError::Tls {
        message: format!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert!(matches!(
            server_name("kafka.example.com:9093").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn files_that_do_not_load_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let settings = TlsSettings {
            ca: Some(missing.clone()),
            ..Default::default()
        };
        let err = connector(&settings).err().unwrap();
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk\n").unwrap();
        let settings = TlsSettings {
            ca: Some(junk),
            ..Default::default()
        };
        let err = connector(&settings).err().unwrap();
        assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    }
}
