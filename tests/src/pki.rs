//! Certificates for TLS tests, made per test with rcgen (PEM files in a temporary directory).

// Test harness: a broken setup must fail the test loudly, right here.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// Certificate parameters with `names` as SANs and `common_name` as the subject (distinct
/// subjects: OpenSSL takes a certificate whose subject equals its issuer for self-signed).
fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

/// PEM files of one test's certificates.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1/localhost and a device certificate, both
    /// issued by the CA, and a second, unrelated CA.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = params(&[], "edge-tests CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        write("ca.crt", ca.pem());

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = params(&["localhost"], "edge-broker test server");
        server_params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server = server_params.signed_by(&server_key, &issuer).unwrap();
        write("server.crt", server.pem());
        write("server.key", server_key.serialize_pem());

        let device_key = KeyPair::generate().unwrap();
        let device = params(&["device-1"], "device-1")
            .signed_by(&device_key, &issuer)
            .unwrap();
        write("device.crt", device.pem());
        write("device.key", device_key.serialize_pem());

        let other_key = KeyPair::generate().unwrap();
        let mut other_params = params(&[], "some other CA");
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write(
            "other-ca.crt",
            other_params.self_signed(&other_key).unwrap().pem(),
        );
        Pki { dir }
    }

    /// The path of one of its files: `ca.crt`, `server.crt`, `server.key`, `device.crt`,
    /// `device.key`, `other-ca.crt`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
