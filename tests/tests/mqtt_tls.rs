//! MQTT over TLS: the real `edge-broker` binary with `mqtt.tls_listen`, and the real Mosquitto
//! clients (`mosquitto_pub`/`mosquitto_sub`, OpenSSL inside) as devices. Certificates are made
//! per test ([`Pki`]): a CA, a server certificate for 127.0.0.1 and a device certificate.
//!
//! Needs mosquitto-clients (`./tests/run.sh` installs them).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use edge_tests::broker::Broker;
use edge_tests::kafka::{metric, wait_for_metric};
use edge_tests::peers::{ChildGuard, program};
use edge_tests::pki::Pki;

/// The `[mqtt]` TLS keys for a broker using `pki`'s server certificate, with or without
/// requiring device certificates from its CA.
fn tls_config(pki: &Pki, client_ca: bool) -> String {
    let mut body = format!(
        "[mqtt]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    );
    if client_ca {
        body.push_str(&format!(
            "tls_client_ca = \"{}\"\n",
            pki.path("ca.crt").display()
        ));
    }
    body
}
/// A Mosquitto client (`mosquitto_pub`/`mosquitto_sub`) for QoS 1 on `topic`, MQTT 5.
fn mosquitto(program_name: &str, addr: SocketAddr, topic: &str) -> Command {
    let mut command = Command::new(program(program_name, "mosquitto-clients"));
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-V", "mqttv5", "-q", "1", "-t", topic])
        .stdin(Stdio::null());
    command
}

/// `mosquitto_pub` one QoS 1 message; `tls` is (CA file, optional client cert + key).
fn publish(
    addr: SocketAddr,
    topic: &str,
    message: &str,
    tls: Option<(&Path, Option<(&Path, &Path)>)>,
) -> Output {
    let mut command = mosquitto("mosquitto_pub", addr, topic);
    command.args(["-m", message]);
    if let Some((ca, client)) = tls {
        command.arg("--cafile").arg(ca);
        if let Some((cert, key)) = client {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    command.output().unwrap()
}

/// A `mosquitto_sub` waiting for `count` messages on `topic`; `ca` selects TLS.
fn subscribe(addr: SocketAddr, topic: &str, count: usize, ca: Option<&Path>) -> ChildGuard {
    let mut command = mosquitto("mosquitto_sub", addr, topic);
    command.args(["-C", &count.to_string(), "-W", "20"]);
    if let Some(ca) = ca {
        command.arg("--cafile").arg(ca);
    }
    ChildGuard(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits for a subscriber and returns what it printed.
fn received(mut sub: ChildGuard) -> String {
    let status = sub.0.wait().unwrap();
    let mut out = String::new();
    sub.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    sub.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "mosquitto_sub failed ({status}): {err}");
    out
}

/// Gives a subscriber time to have its SUBSCRIBE acknowledged before publishing.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn devices_publish_and_subscribe_over_tls_next_to_plain_mqtt() {
    let pki = Pki::new();
    let broker = Broker::start(&tls_config(&pki, false));
    let plain = broker.mqtt_addr();
    let tls = broker.listen_addr("mqtt.tls_listen");
    let metrics = broker.listen_addr("metrics.listen");
    let ca = pki.path("ca.crt");

    // TLS publisher → plain subscriber, and plain publisher → TLS subscriber: one broker.
    let plain_sub = subscribe(plain, "sensors/+/t", 1, None);
    let tls_sub = subscribe(tls, "alarms/#", 1, Some(&ca));
    settle();
    let out = publish(tls, "sensors/dev-1/t", "over-tls", Some((&ca, None)));
    assert!(
        out.status.success(),
        "TLS publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = publish(plain, "alarms/door", "over-tcp", None);
    assert!(
        out.status.success(),
        "plain publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(received(plain_sub).trim(), "over-tls");
    assert_eq!(received(tls_sub).trim(), "over-tcp");

    // A client that does not trust the server's CA is refused by the client's own check.
    let out = publish(
        tls,
        "sensors/dev-1/t",
        "untrusted",
        Some((&pki.path("other-ca.crt"), None)),
    );
    assert!(
        !out.status.success(),
        "a client with the wrong CA must not connect"
    );

    // Plain MQTT bytes on the TLS port: the handshake fails, the connection is closed, counted.
    let before = metric(
        metrics,
        "edge_tls_handshake_failures_total{protocol=\"mqtt\"}",
    )
    .unwrap();
    let mut raw = TcpStream::connect(tls).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(&[0x20]),
        "no CONNACK may answer plain MQTT on the TLS port: {reply:?}"
    );
    wait_for_metric(
        metrics,
        "edge_tls_handshake_failures_total{protocol=\"mqtt\"}",
        Duration::from_secs(10),
        |v| v > before,
    );
    // The listener is still serving.
    let out = publish(tls, "sensors/dev-2/t", "still-up", Some((&ca, None)));
    assert!(
        out.status.success(),
        "TLS publish after a bad client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_a_client_ca_only_devices_with_a_certificate_from_it_connect() {
    let pki = Pki::new();
    let broker = Broker::start(&tls_config(&pki, true));
    let tls = broker.listen_addr("mqtt.tls_listen");
    let ca = pki.path("ca.crt");
    let (cert, key) = (pki.path("device.crt"), pki.path("device.key"));

    let out = publish(tls, "sensors/dev-1/t", "no-cert", Some((&ca, None)));
    assert!(
        !out.status.success(),
        "a device without a certificate must be refused"
    );
    let out = publish(
        tls,
        "sensors/dev-1/t",
        "with-cert",
        Some((&ca, Some((&cert, &key)))),
    );
    assert!(
        out.status.success(),
        "a device with a certificate from the CA was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_tls_key_that_does_not_load_is_named_by_check_and_run() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let body = tls_config(&pki, false).replace("server.key", "device.key");
    let config = edge_tests::broker::write_config(dir.path(), &body);
    let broker = edge_tests::broker::broker_binary();
    let check = Command::new(&broker)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success(),
        "check accepted a key of another certificate"
    );
    assert!(
        stderr.contains("mqtt.tls_cert"),
        "check must name the field: {stderr}"
    );
    let run = Command::new(&broker)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "run started with a key of another certificate"
    );
    assert!(
        stderr.contains("mqtt.tls_cert"),
        "run must name the field: {stderr}"
    );
}

/// A renewed certificate (new files at the same paths) is used for connections made after a
/// SIGHUP, without a restart.
#[test]
fn a_reload_picks_up_a_renewed_certificate() {
    let (old, new) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let install = |pki: &Pki| {
        std::fs::copy(pki.path("server.crt"), &cert).unwrap();
        std::fs::copy(pki.path("server.key"), &key).unwrap();
    };
    install(&old);
    let broker = Broker::start(&format!(
        "[mqtt]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let tls = broker.listen_addr("mqtt.tls_listen");
    let trusts = |pki: &Pki| {
        publish(
            tls,
            "sensors/dev-1/t",
            "x",
            Some((&pki.path("ca.crt"), None)),
        )
        .status
        .success()
    };
    assert!(
        trusts(&old) && !trusts(&new),
        "the first certificate is served"
    );

    install(&new);
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    broker.wait_for_line("MQTT TLS certificate loaded", Duration::from_secs(10));
    assert!(
        trusts(&new) && !trusts(&old),
        "after the reload the renewed certificate is served"
    );
}
