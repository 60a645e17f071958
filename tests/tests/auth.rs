//! Who may connect and what they may touch (issue 12), end to end against the real binary with
//! real clients: Debian's `mosquitto_passwd` and `mosquitto_pub`, paho-mqtt, nats-py, and a raw
//! MQTT client for exact reason codes; Debian's Mosquitto 2.0.11 as the reference broker where
//! the answer should be Mosquitto's.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::Broker;
use edge_tests::mqtt::Mosquitto;
use edge_tests::peers::{program, python, repo_root};
use serde_json::{Value, json};

fn tool(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/tools/auth_clients.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run auth_clients.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "auth_clients.py {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON from auth_clients.py")
}

/// A raw MQTT session (`auth_clients.py mqtt`).
fn mqtt(addr: std::net::SocketAddr, spec: Value) -> Value {
    tool(&[
        "mqtt",
        &addr.ip().to_string(),
        &addr.port().to_string(),
        &spec.to_string(),
    ])
}

fn nats(broker: &Broker, spec: Value) -> Value {
    let url = format!("nats://{}", broker.listen_addr("nats.listen"));
    tool(&["nats", &url, &spec.to_string()])
}

/// Writes a password file with Debian's `mosquitto_passwd` (`$7$` unless `sha512`).
fn mosquitto_passwd(file: &Path, user: &str, password: &str, sha512: bool) {
    let mut cmd = Command::new(program("mosquitto_passwd", "mosquitto"));
    if sha512 {
        cmd.args(["-H", "sha512"]);
    }
    if !file.exists() {
        cmd.arg("-c");
    }
    let status = cmd
        .arg("-b")
        .arg(file)
        .args([user, password])
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed");
}

/// `edge-broker passwd FILE USER` with the password on stdin.
fn edge_passwd(file: &Path, user: &str, password: &str) {
    let mut child = Command::new(edge_tests::broker::broker_binary())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edge-broker passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "edge-broker passwd: {out:?}");
}

fn auth_config(dir: &Path, extra: &str) -> String {
    format!(
        "[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\nmax_login_delay = \"400ms\"\n{extra}",
        dir.join("passwd").display(),
        dir.join("acl").display()
    )
}

const ACL: &str = "\
# anonymous clients: nothing
user alice
topic read sensors/#
topic deny sensors/secret
topic write sensors/alice/#
topic readwrite _INBOX/#
user admin
topic readwrite #
user carol
topic readwrite public/#
topic readwrite _INBOX/#
pattern readwrite devices/%u/#
";

/// A directory with `passwd` (alice `$7$` and admin, both by mosquitto_passwd; bob `$6$`) and
/// `acl`.
fn users() -> tempfile::TempDir {
    let files = tempfile::tempdir().unwrap();
    let passwd = files.path().join("passwd");
    mosquitto_passwd(&passwd, "alice", "alice-pw", false);
    mosquitto_passwd(&passwd, "admin", "admin-pw", false);
    mosquitto_passwd(&passwd, "bob", "bob-pw", true);
    mosquitto_passwd(&passwd, "carol", "carol-pw", false);
    std::fs::write(files.path().join("acl"), ACL).unwrap();
    files
}

/// Sends `bytes` on a raw NATS connection and returns everything read until it goes quiet.
fn nats_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    raw.write_all(bytes).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(&mut raw, &mut buf) {
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

fn login(
    addr: std::net::SocketAddr,
    v5: bool,
    user: Option<&str>,
    password: Option<&str>,
) -> Value {
    mqtt(
        addr,
        json!({"v5": v5, "user": user, "password": password, "client_id": "login-probe"}),
    )["connack"]
        .clone()
}

#[test]
fn mqtt_logins_are_checked_against_a_mosquitto_passwd_file_as_mosquitto_does() {
    let files = users();
    let broker = Broker::start(&auth_config(files.path(), ""));
    let ours = broker.mqtt_addr();
    let mosquitto = Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        files.path().join("passwd").display()
    ));
    let cases: [(Option<&str>, Option<&str>); 6] = [
        (Some("alice"), Some("alice-pw")), // $7$ written by mosquitto_passwd 2.0.11
        (Some("bob"), Some("bob-pw")),     // $6$ (mosquitto_passwd -H sha512)
        (Some("alice"), Some("wrong")),
        (Some("nobody"), Some("x")),
        (Some("alice"), None),
        (None, None),
    ];
    for v5 in [false, true] {
        for (user, password) in cases {
            let expected = login(mosquitto.addr, v5, user, password);
            let got = login(ours, v5, user, password);
            assert_eq!(got, expected, "v5={v5} user={user:?} password={password:?}");
        }
    }
    // Exact codes, not just agreement: 0 for the right password, Not authorized otherwise.
    assert_eq!(
        login(ours, false, Some("alice"), Some("alice-pw")),
        json!(0)
    );
    assert_eq!(login(ours, false, Some("alice"), Some("wrong")), json!(5));
    assert_eq!(login(ours, true, Some("alice"), Some("wrong")), json!(0x87));

    // paho, v3.1.1 and v5.
    let port = ours.port().to_string();
    let paho = |v5: bool, password: &str| {
        tool(&[
            "paho",
            "127.0.0.1",
            &port,
            &json!({"v5": v5, "user": "bob", "password": password}).to_string(),
        ])["rc"]
            .clone()
    };
    assert_eq!(paho(false, "bob-pw"), json!(0));
    assert_eq!(paho(true, "bob-pw"), json!(0));
    // (paho reports a 3.1.1 CONNACK 5 as MQTT 5's 0x87 "Not authorized".)
    assert_eq!(paho(false, "nope"), json!(0x87));
    assert_eq!(paho(true, "nope"), json!(0x87));

    // mosquitto_pub.
    let pub_with = |args: &[&str]| {
        Command::new(program("mosquitto_pub", "mosquitto-clients"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "sensors/alice/t",
                "-m",
                "x",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        pub_with(&["-u", "alice", "-P", "alice-pw"])
            .status
            .success()
    );
    let wrong = pub_with(&["-u", "alice", "-P", "wrong"]);
    assert!(!wrong.status.success(), "{wrong:?}");
    assert!(
        !pub_with(&["-u", "x", "-P", "wrong", "-V", "mqttv311"])
            .status
            .success()
    );
    assert!(
        !pub_with(&[]).status.success(),
        "anonymous is off with a password file"
    );
    assert!(
        broker
            .metric("edge_auth_login_failures_total{protocol=\"mqtt\"}")
            .unwrap()
            >= 10.0
    );
}

#[test]
fn nats_uses_the_same_users_and_requires_auth_before_anything_else() {
    let files = users();
    let broker = Broker::start(&auth_config(files.path(), ""));
    let addr = broker.listen_addr("nats.listen");
    // INFO says auth is required, and nothing but CONNECT is accepted before it.
    let seen = nats_raw(addr, b"SUB sensors.> 1\r\nPUB sensors.x 1\r\nx\r\n");
    assert!(seen.contains("\"auth_required\":true"), "{seen}");
    assert!(seen.contains("-ERR 'Authorization Violation'"), "{seen}");

    let ok = nats(&broker, json!({"user": "carol", "password": "carol-pw"}));
    assert_eq!(ok["connected"], true, "{ok}");
    let wrong = nats(&broker, json!({"user": "carol", "password": "nope"}));
    assert_eq!(wrong["connected"], false, "{wrong}");
    assert!(
        wrong.to_string().contains("Authorization Violation"),
        "{wrong}"
    );
    let anonymous = nats(&broker, json!({}));
    assert_eq!(anonymous["connected"], false, "{anonymous}");
    assert!(
        broker
            .metric("edge_auth_login_failures_total{protocol=\"nats\"}")
            .unwrap()
            >= 2.0
    );
}

#[test]
fn permissions_hold_for_publish_subscribe_and_across_protocols() {
    let files = users();
    let broker = Broker::start(&auth_config(
        files.path(),
        "[[route]]\nmqtt = \"#\"\nkafka_topic = \"all\"\n[kafka]\nenabled = false\n",
    ));
    let addr = broker.mqtt_addr();
    let alice = json!({"user": "alice", "password": "alice-pw"});
    let with = |base: &Value, extra: Value| {
        let mut spec = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    // Publishes: v5 gets 0x87 for a denied topic; 3.1.1 gets a PUBACK (as Mosquitto does) and
    // the message is dropped.
    let out = mqtt(
        addr,
        with(
            &alice,
            json!({"v5": true, "client_id": "a5", "steps": [
        {"pub": "sensors/alice/t", "qos": 1}, {"pub": "sensors/bob/t", "qos": 1},
        {"pub": "sensors/bob/t", "qos": 2}, {"pub": "devices/alice/x", "qos": 1}]}),
        ),
    );
    assert_eq!(out["results"], json!([0, 0x87, 0x87, 0]), "{out}");
    let out = mqtt(
        addr,
        with(
            &alice,
            json!({"v5": false, "client_id": "a3", "steps": [
        {"pub": "sensors/bob/t", "qos": 1}, {"pub": "sensors/bob/t", "qos": 2}]}),
        ),
    );
    assert_eq!(out["results"], json!([0, 0]), "{out}");
    // Only the allowed publishes were stored (routes match everything).
    assert_eq!(broker.metric("edge_log_records"), Some(2.0));
    assert_eq!(
        broker.metric("edge_auth_denied_publishes_total{protocol=\"mqtt\"}"),
        Some(4.0)
    );
    // Subscriptions: v5 0x87, 3.1.1 0x80; granted ones get their QoS.
    let out = mqtt(
        addr,
        with(
            &alice,
            json!({"v5": true, "client_id": "s5", "steps": [
        {"sub": "#"}, {"sub": "sensors/secret"}, {"sub": "sensors/+/t"}, {"sub": "devices/bob/#"}]}),
        ),
    );
    assert_eq!(out["results"], json!([0x87, 0x87, 1, 0x87]), "{out}");
    let out = mqtt(
        addr,
        with(
            &alice,
            json!({"v5": false, "client_id": "s3", "steps": [{"sub": "#"}]}),
        ),
    );
    assert_eq!(out["results"], json!([0x80]), "{out}");

    // A subscription a deny rule overlaps is granted and filtered message by message.
    let admin = json!({"user": "admin", "password": "admin-pw"});
    let topics = ["sensors/secret", "sensors/x", "public/p"];
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let steps: Vec<Value> = topics.iter().map(|t| json!({"pub": t, "qos": 1})).collect();
        mqtt(
            addr,
            json!({"user": "admin", "password": "admin-pw", "client_id": "adm", "steps": steps}),
        )
    });
    let out = mqtt(
        addr,
        with(
            &alice,
            json!({"client_id": "filtered", "steps": [
        {"sub": "sensors/#"}, {"recv": 2.0}]}),
        ),
    );
    publisher.join().unwrap();
    assert_eq!(out["results"], json!([1, ["sensors/x"]]), "{out}");
    let _ = admin;

    // NATS: the same rules on the mapped topics.
    let carol = json!({"user": "carol", "password": "carol-pw", "steps": [
        {"pub": "public.ok"}, {"pub": "sensors.x"}, {"sub": "sensors.>"}, {"sub": "public.>"},
        {"sub": "devices.carol.>"}]});
    let out = nats(&broker, carol);
    // (nats-py lower-cases the -ERR text; the exact wording is checked on the wire below.)
    let errors = out["errors"].to_string().to_lowercase();
    assert!(
        errors.contains("permissions violation for publish to \\\"sensors.x\\\""),
        "{out}"
    );
    assert!(
        errors.contains("permissions violation for subscription to \\\"sensors.>\\\""),
        "{out}"
    );
    assert!(!errors.contains("public"), "{out}");
    // nats-server's exact wording on the wire; the connection stays open after both.
    let wire = nats_raw(
        broker.listen_addr("nats.listen"),
        b"CONNECT {\"user\":\"carol\",\"pass\":\"carol-pw\",\"verbose\":false}\r\n\
          PUB sensors.x 1\r\nx\r\nSUB sensors.> 1\r\nPING\r\n",
    );
    assert!(
        wire.contains("-ERR 'Permissions Violation for Publish to \"sensors.x\"'\r\n"),
        "{wire}"
    );
    assert!(
        wire.contains("-ERR 'Permissions Violation for Subscription to \"sensors.>\"'\r\n"),
        "{wire}"
    );
    assert!(wire.ends_with("PONG\r\n"), "still connected: {wire}");
    assert!(
        !errors.contains("devices.carol"),
        "%u patterns apply to NATS users: {out}"
    );

    // Across protocols: carol may not read sensors/x over MQTT, and not over NATS either; what
    // alice publishes there reaches an MQTT subscriber (admin) but not carol's NATS subscription.
    let sub = std::thread::spawn({
        let url = format!("nats://{}", broker.listen_addr("nats.listen"));
        move || {
            tool(&[
                "nats",
                &url,
                &json!({"user": "carol", "password": "carol-pw", "steps": [
                {"sub": "sensors.*"}, {"sub": "public.*"}, {"recv": 2.5}]})
                .to_string(),
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    mqtt(
        addr,
        json!({"user": "admin", "password": "admin-pw", "client_id": "adm2", "steps": [
        {"pub": "sensors/x", "qos": 1}, {"pub": "public/y", "qos": 1}]}),
    );
    let out = sub.join().unwrap();
    assert_eq!(out["results"][2], json!(["public.y"]), "{out}");
    let out = mqtt(
        addr,
        json!({"user": "carol", "password": "carol-pw", "client_id": "c-m",
        "steps": [{"sub": "sensors/x"}]}),
    );
    assert_eq!(out["results"], json!([0x87]), "{out}");
}

#[test]
fn another_user_cannot_take_over_a_session_even_after_a_restart() {
    let files = users();
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(files.path(), "");
    let mut broker = Broker::start_in(dir.path(), &config);
    let alice = |v5: bool| {
        json!({"v5": v5, "user": "alice", "password": "alice-pw", "client_id": "dev-1",
               "clean": false, "props": if v5 { json!({"session_expiry": 3600}) } else { Value::Null },
               "steps": [{"sub": "sensors/+/t"}]})
    };
    let first = mqtt(broker.mqtt_addr(), alice(false));
    assert_eq!(first["connack"], json!(0), "{first}");
    for v5 in [false, true] {
        let bob = json!({"v5": v5, "user": "bob", "password": "bob-pw", "client_id": "dev-1",
                         "clean": v5});
        let out = mqtt(broker.mqtt_addr(), bob);
        assert_eq!(out["connack"], json!(if v5 { 0x87 } else { 5 }), "{out}");
    }
    assert!(broker.terminate(Duration::from_secs(25)).success());
    let broker = Broker::start_in(dir.path(), &config);
    let bob = json!({"v5": false, "user": "bob", "password": "bob-pw", "client_id": "dev-1"});
    assert_eq!(mqtt(broker.mqtt_addr(), bob)["connack"], json!(5));
    let back = mqtt(broker.mqtt_addr(), alice(false));
    assert_eq!(back["connack"], json!(0), "{back}");
    assert_eq!(back["session_present"], json!(true), "{back}");
    assert_eq!(
        broker.metric("edge_auth_session_takeovers_refused_total"),
        Some(1.0)
    );
}

#[test]
fn sighup_reloads_users_and_permissions_and_a_bad_file_keeps_the_old_ones() {
    let files = users();
    let broker = Broker::start(&auth_config(files.path(), ""));
    let addr = broker.mqtt_addr();
    let dave = json!({"user": "dave", "password": "dave-pw", "client_id": "d"});
    assert_eq!(mqtt(addr, dave.clone())["connack"], json!(0x87));
    // A user added with our passwd subcommand, and carol's rights widened.
    edge_passwd(&files.path().join("passwd"), "dave", "dave-pw");
    std::fs::write(
        files.path().join("acl"),
        format!("{ACL}user dave\ntopic readwrite dave/#\nuser carol\ntopic write sensors/#\n"),
    )
    .unwrap();
    let carol = json!({"user": "carol", "password": "carol-pw", "client_id": "c",
                       "steps": [{"pub": "sensors/c", "qos": 1}]});
    assert_eq!(mqtt(addr, carol.clone())["results"], json!([0x87]));
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    broker.wait_for_line("users and permissions reloaded", Duration::from_secs(10));
    assert_eq!(mqtt(addr, dave.clone())["connack"], json!(0));
    assert_eq!(mqtt(addr, carol.clone())["results"], json!([0]));

    // A connection made before a reload gets the new rules at its next publish.
    let live = std::thread::spawn(move || {
        mqtt(
            addr,
            json!({"user": "carol", "password": "carol-pw", "client_id": "c2", "steps": [
            {"pub": "sensors/c", "qos": 1}, {"sleep": 2.0}, {"pub": "sensors/c", "qos": 1}]}),
        )
    });
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(files.path().join("acl"), ACL).unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    let out = live.join().unwrap();
    assert_eq!(out["results"], json!([0, 0x87]), "{out}");

    // A broken password file: the reload is refused with the reason, the old users stay.
    std::fs::write(files.path().join("passwd"), "alice:plaintext\n").unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    let line = broker.wait_for_line("reload refused", Duration::from_secs(10));
    assert!(line.contains("line 1"), "{line}");
    assert_eq!(
        mqtt(addr, dave)["connack"],
        json!(0),
        "the previous users stay in force"
    );
}

#[test]
fn failed_logins_are_delayed_per_source_even_in_parallel() {
    let files = users();
    let broker = Broker::start(&auth_config(files.path(), ""));
    let addr = broker.mqtt_addr();
    // Delays: 100, 200, 400 ms (max_login_delay), then 400 ms each.
    let started = Instant::now();
    for _ in 0..6 {
        assert_eq!(login(addr, true, Some("alice"), Some("guess")), json!(0x87));
    }
    let sequential = started.elapsed();
    assert!(
        sequential >= Duration::from_millis(100 + 200 + 400 * 4),
        "6 wrong passwords answered in {sequential:?}"
    );
    // Many connections at once do not multiply the guessing rate: the source's attempts are
    // taken one at a time (400 ms each), and those that would wait longer than three delays
    // are refused unchecked. Without the gate all six would be answered after ~400 ms.
    let started = Instant::now();
    let guesses: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || login(addr, false, Some("alice"), Some("guess"))))
        .collect();
    for guess in guesses {
        assert_eq!(guess.join().unwrap(), json!(5));
    }
    let parallel = started.elapsed();
    assert!(
        parallel >= Duration::from_millis(3 * 400 - 100),
        "6 parallel guesses answered in {parallel:?}"
    );
    // The right password still gets in.
    assert_eq!(login(addr, true, Some("alice"), Some("alice-pw")), json!(0));
    assert_eq!(
        broker.metric("edge_auth_login_failures_total{protocol=\"mqtt\"}"),
        Some(12.0)
    );
    assert_eq!(broker.metric("edge_auth_tracked_sources"), Some(1.0));
}

#[test]
fn passwd_writes_entries_mosquitto_accepts_and_keeps_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let files = users();
    let passwd = files.path().join("passwd");
    // Mosquitto reads it after dropping to its own user: other users must be able to read it
    // for this test (mosquitto_passwd itself writes 0644).
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o604)).unwrap();
    edge_passwd(&passwd, "erin", "erin-pw");
    edge_passwd(&passwd, "alice", "new-alice-pw");
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(text.contains("bob:$6$"), "other lines are kept: {text}");
    assert!(
        text.lines().any(|l| l.starts_with("erin:$7$101$")),
        "{text}"
    );
    let mode = std::fs::metadata(&passwd).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o604, "the file's mode is kept");
    // Mosquitto itself accepts what we wrote.
    let mosquitto = Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ));
    assert_eq!(
        login(mosquitto.addr, false, Some("erin"), Some("erin-pw")),
        json!(0)
    );
    assert_eq!(
        login(mosquitto.addr, false, Some("alice"), Some("new-alice-pw")),
        json!(0)
    );
    assert_eq!(
        login(mosquitto.addr, false, Some("alice"), Some("alice-pw")),
        json!(5)
    );
    // The password never goes on the command line.
    let out = Command::new(edge_tests::broker::broker_binary())
        .args(["passwd", "x", "user", "secret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn with_use_identity_as_username_the_device_certificate_is_the_user() {
    let pki = edge_tests::pki::Pki::new();
    let files = users();
    std::fs::write(
        files.path().join("acl"),
        format!("{ACL}user device-1\ntopic write sensors/device-1/#\n"),
    )
    .unwrap();
    let config = format!(
        "{}[mqtt]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         tls_client_ca = \"{}\"\nuse_identity_as_username = true\n",
        auth_config(files.path(), ""),
        pki.path("server.crt").display(),
        pki.path("server.key").display(),
        pki.path("ca.crt").display()
    );
    let broker = Broker::start(&config);
    let tls = broker.listen_addr("mqtt.tls_listen");
    let publish = |topic: &str| {
        Command::new(program("mosquitto_pub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &tls.port().to_string()])
            .args(["-V", "mqttv5", "-q", "1", "-t", topic, "-m", "x"])
            .arg("--cafile")
            .arg(pki.path("ca.crt"))
            .arg("--cert")
            .arg(pki.path("device.crt"))
            .arg("--key")
            .arg(pki.path("device.key"))
            .output()
            .unwrap()
    };
    // The certificate's CN (device-1) is the ACL user: its own topic is allowed ...
    let out = publish("sensors/device-1/t");
    assert!(out.status.success(), "{out:?}");
    let denied = "edge_auth_denied_publishes_total{protocol=\"mqtt\"}";
    assert_eq!(broker.metric(denied), Some(0.0));
    // ... another device's is not (PUBACK 0x87).
    publish("sensors/device-2/t");
    assert_eq!(broker.metric(denied), Some(1.0));
    // On the plain listener the same name without a password is nobody.
    let plain = login(broker.mqtt_addr(), true, Some("device-1"), None);
    assert_eq!(plain, json!(0x87));
}

#[test]
fn a_nats_connection_that_kept_publishing_one_subject_gets_a_reload_at_its_next_publish() {
    // The connection remembers that the ACL allowed the subject it repeats; a reload that
    // revokes it must still refuse the very next PUB on the same connection.
    let files = users();
    std::fs::write(
        files.path().join("acl"),
        format!("{ACL}user carol\ntopic write sensors/#\n"),
    )
    .unwrap();
    let broker = Broker::start(&auth_config(files.path(), ""));
    let mut raw = std::net::TcpStream::connect(broker.listen_addr("nats.listen")).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = String::new();
    let until = |raw: &mut std::net::TcpStream, seen: &mut String, pongs: usize| {
        let mut buf = [0u8; 4096];
        while seen.matches("PONG").count() < pongs {
            let n = std::io::Read::read(raw, &mut buf).expect("read before timeout");
            assert!(n > 0, "closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    raw.write_all(
        b"CONNECT {\"verbose\":false,\"user\":\"carol\",\"pass\":\"carol-pw\"}\r\n\
          PUB sensors.c 1\r\nx\r\nPUB sensors.c 1\r\nx\r\nPING\r\n",
    )
    .unwrap();
    until(&mut raw, &mut seen, 1);
    assert!(!seen.contains("-ERR"), "allowed before the reload: {seen}");
    std::fs::write(files.path().join("acl"), ACL).unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    reloaded(&broker, 1);
    raw.write_all(b"PUB sensors.c 1\r\nx\r\nPING\r\n").unwrap();
    until(&mut raw, &mut seen, 2);
    let after = &seen[seen.find("PONG").unwrap()..];
    assert!(
        after.contains("-ERR 'Permissions Violation for Publish to \"sensors.c\"'"),
        "refused after the reload: {seen}"
    );
    // And allowed again once a reload gives the right back.
    std::fs::write(
        files.path().join("acl"),
        format!("{ACL}user carol\ntopic write sensors/#\n"),
    )
    .unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    reloaded(&broker, 2);
    let before = seen.len();
    raw.write_all(b"PUB sensors.c 1\r\nx\r\nPING\r\n").unwrap();
    until(&mut raw, &mut seen, 3);
    assert!(!seen[before..].contains("-ERR"), "allowed again: {seen}");
}

/// Waits until the broker has logged `count` successful auth reloads.
fn reloaded(broker: &Broker, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker
        .lines()
        .iter()
        .filter(|l| l.contains("users and permissions reloaded"))
        .count()
        < count
    {
        assert!(
            Instant::now() < deadline,
            "no reload {count} logged: {:?}",
            broker.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
