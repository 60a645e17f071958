//! Differential tests against the real nats-server (Debian's 2.9.10: `apt-get install -y
//! nats-server`): the same raw bytes go to nats-server over TCP and through our decoder, and
//! both must agree on which `-ERR` texts come back and whether the connection is closed.
//! Frames nats-server sends (INFO, MSG, HMSG, -ERR, PONG) must decode with our decoder, and
//! what our encoder writes must be accepted and echoed back unchanged.
//!
//! Each test starts its own server on 127.0.0.1 with a random port (`-p -1`) and stops it
//! through a guard's `Drop`, also when an assertion fails.

// Test helpers outside #[test] fns panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edge_proto::nats::{
    ClientOp, Connect, DecodeError, HeaderMap, Limits, Msg, Pub, ServerError, ServerOp, Sub,
    decode_client_op, decode_server_op, subject,
};

/// A running nats-server, killed and reaped on drop.
struct NatsServer {
    child: Child,
    port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/sbin/nats-server".into());
    candidates.push("/usr/bin/nats-server".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (looked in PATH, /usr/sbin, /usr/bin): \
             install it with `apt-get install -y nats-server`"
            )
        })
}

fn start_server(extra: &[&str]) -> NatsServer {
    let mut child = Command::new(nats_server_binary())
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting nats-server failed: {e} (apt-get install -y nats-server)")
        });
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read the log until the port shows up, then keep draining so the server never blocks.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.split("Listening for client connections on ").nth(1)
                && let Some(port) = addr
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
            {
                let _ = tx.send(port);
            }
        }
    });
    // The guard owns the process from here on, so a timeout below still kills it.
    let mut server = NatsServer { child, port: 0 };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(port) => server.port = port,
        Err(_) => panic!("nats-server did not report its port within 10s"),
    }
    server
}

/// What a connection observed: `-ERR` texts in order, PONG count, other ops, and closure.
#[derive(Debug, Default, PartialEq, Eq)]
struct Observed {
    errs: Vec<String>,
    pongs: usize,
    closed: bool,
}

fn connect(server: &NatsServer) -> (TcpStream, BytesMut) {
    let s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to nats-server");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    (s, BytesMut::new())
}

/// Reads and decodes server ops until `done` says stop, EOF/reset, or the deadline.
fn read_ops(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Duration,
    mut done: impl FnMut(&[ServerOp]) -> bool,
) -> (Vec<ServerOp>, bool) {
    let end = Instant::now() + deadline;
    let mut ops = Vec::new();
    let limits = Limits {
        max_payload: 8 * 1024 * 1024,
        ..Limits::default()
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(op) = decode_server_op(buf, &limits)
            .unwrap_or_else(|e| panic!("our decoder refused nats-server's bytes: {e}: {buf:?}"))
        {
            ops.push(op);
        }
        if done(&ops) {
            return (ops, false);
        }
        if Instant::now() > end {
            return (ops, false);
        }
        match s.read(&mut chunk) {
            Ok(0) => return (ops, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (ops, true),
            Err(e) => panic!("read from nats-server: {e}"),
        }
    }
}

fn observe(ops: &[ServerOp], closed: bool) -> Observed {
    let mut o = Observed {
        closed,
        ..Observed::default()
    };
    for op in ops {
        match op {
            ServerOp::Err(t) => o.errs.push(t.clone()),
            ServerOp::Pong => o.pongs += 1,
            _ => {}
        }
    }
    o
}

/// What our decoder predicts a nats-server with verbose off would answer to `input + PING`.
fn predict(input: &[u8]) -> Observed {
    let mut buf = BytesMut::from(input);
    buf.extend_from_slice(b"PING\r\n");
    let mut o = Observed::default();
    loop {
        match decode_client_op(&mut buf, &Limits::default()) {
            Ok(Some(ClientOp::Ping)) => o.pongs += 1,
            Ok(Some(_)) => {}
            Ok(None) => return o,
            Err(e) => {
                if let Some(m) = e.err_message() {
                    o.errs.push(m.to_owned());
                }
                if e.closes_connection() {
                    o.closed = true;
                    return o;
                }
            }
        }
    }
}

const CONNECT_QUIET: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n";

/// Sends `prelude`, then `input`, then `PING`, and returns what nats-server did.
fn run_case(server: &NatsServer, prelude: &[u8], input: &[u8], expected_pongs: usize) -> Observed {
    let (mut s, mut buf) = connect(server);
    let (ops, _) = read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    assert!(
        matches!(ops.first(), Some(ServerOp::Info(_))),
        "INFO first: {ops:?}"
    );
    s.write_all(prelude).expect("write prelude");
    // Writes may fail once the server has closed; that is an observation, not an error.
    let _ = s.write_all(input).and_then(|()| s.write_all(b"PING\r\n"));
    let (ops, closed) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |ops| {
        ops.iter().filter(|o| **o == ServerOp::Pong).count() >= expected_pongs.max(1)
    });
    observe(&ops, closed)
}

fn big_sub(n: usize) -> Vec<u8> {
    let mut v = b"SUB ".to_vec();
    v.extend(std::iter::repeat_n(b'a', n));
    v.extend_from_slice(b" 1\r\n");
    v
}

#[test]
fn decoder_agrees_with_nats_server_on_malformed_and_odd_input() {
    let server = start_server(&[]);
    let mut long_unterminated = b"SUB ".to_vec();
    long_unterminated.extend(std::iter::repeat_n(b'a', 5000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown verb", b"FOO\r\n".to_vec()),
        ("verb without blank", b"PUB\r\n".to_vec()),
        ("server verb from client", b"MSG foo 1 1\r\na\r\n".to_vec()),
        ("pub without size", b"PUB foo\r\n".to_vec()),
        ("pub empty args", b"PUB \r\n".to_vec()),
        ("pub bad size", b"PUB foo x\r\n".to_vec()),
        ("pub negative size", b"PUB foo -1\r\n".to_vec()),
        ("pub 10-digit size", b"PUB foo 1234567890\r\n".to_vec()),
        (
            "pub payload longer than size",
            b"PUB foo 3\r\nabcd\r\n".to_vec(),
        ),
        (
            "pub payload ends with LF only",
            b"PUB foo 1\r\na\n".to_vec(),
        ),
        ("pub over max_payload", b"PUB foo 1048577\r\n".to_vec()),
        (
            "pub at max_payload header line",
            b"PUB foo 1048576\r\n".to_vec(),
        ),
        (
            "hpub header larger than total",
            b"HPUB foo 5 3\r\n".to_vec(),
        ),
        ("hpub missing size", b"HPUB foo 3\r\n".to_vec()),
        (
            "hpub payload overrun",
            b"HPUB foo 2 3\r\nNATS/1.0\r\n\r\n".to_vec(),
        ),
        ("hpub over max_payload", b"HPUB foo 10 1048577\r\n".to_vec()),
        ("sub missing sid", b"SUB foo\r\n".to_vec()),
        ("sub too many args", b"SUB a b c d\r\n".to_vec()),
        ("sub empty token", b"SUB foo.. 1\r\nPING\r\n".to_vec()),
        ("sub token after fwc", b"SUB foo.>.bar 1\r\n".to_vec()),
        ("sub leading dot", b"SUB .foo 1\r\n".to_vec()),
        ("unsub without sid", b"UNSUB\r\n".to_vec()),
        ("unsub blank sid", b"UNSUB \r\n".to_vec()),
        ("unsub too many args", b"UNSUB 1 2 3\r\n".to_vec()),
        ("control line at limit", big_sub(4094)),
        ("control line over limit", big_sub(4095)),
        ("unterminated long line", long_unterminated),
        ("bad connect json", b"CONNECT {bad\r\n".to_vec()),
        ("connect without json", b"CONNECT\r\n".to_vec()),
        ("connect trailing junk", b"CONNECT {} x\r\n".to_vec()),
        (
            "connect protocol 5",
            b"CONNECT {\"protocol\":5}\r\n".to_vec(),
        ),
        (
            "connect protocol -1",
            b"CONNECT {\"protocol\":-1}\r\n".to_vec(),
        ),
        ("client -ERR", b"-ERR 'x'\r\n".to_vec()),
        ("client bad INFO", b"INFO {\r\n".to_vec()),
        // Accepted input.
        (
            "client INFO and +OK ignored",
            b"INFO {}\r\n+OK\r\nPING\r\n".to_vec(),
        ),
        (
            "lower/mixed case verbs",
            b"pub foo 1\r\na\r\nPiNg\r\nsUb x 1\r\nunsub 1\r\n".to_vec(),
        ),
        ("junk after PING", b"PINGX\r\nPING x\r\n".to_vec()),
        (
            "tabs and repeated blanks",
            b"PUB\tfoo \t r  1\r\na\r\nSUB foo q 1 \r\n".to_vec(),
        ),
        ("bare LF control line", b"PUB foo 1\na\r\n".to_vec()),
        ("empty payload", b"PUB foo 0\r\n\r\n".to_vec()),
        (
            "unsub odd max",
            b"UNSUB 1 x\r\nUNSUB 2 0\r\nUNSUB 3 5\r\n".to_vec(),
        ),
        (
            "hpub ok",
            b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".to_vec(),
        ),
        (
            "connect unknown fields",
            b"CONNECT {\"verbose\":false,\"x\":{\"y\":[1]}}\r\n".to_vec(),
        ),
        (
            "connect without blank",
            b"CONNECT{\"verbose\":false}\r\n".to_vec(),
        ),
        (
            "wildcard chars inside pub tokens",
            b"PUB a*.b> 1\r\na\r\n".to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, input) in &cases {
        let expected = predict(input);
        let got = run_case(&server, CONNECT_QUIET, input, expected.pongs);
        if got != expected {
            failures.push(format!(
                "{name}: nats-server {got:?}, we predict {expected:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}

#[test]
fn connect_checks_agree_on_a_fresh_connection() {
    let server = start_server(&[]);
    for input in [
        &b"CONNECT {\"no_responders\":true}\r\n"[..],
        b"CONNECT {\"no_responders\":true,\"headers\":true,\"verbose\":false}\r\n",
        b"CONNECT {\"protocol\":2,\"verbose\":false}\r\n",
    ] {
        let expected = predict(input);
        let got = run_case(&server, b"", input, expected.pongs);
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn split_writes_are_handled_like_nats_server() {
    // The same ops arrive one byte per write; our decoder sees every prefix.
    let server = start_server(&[]);
    let (mut s, mut buf) = connect(&server);
    read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    s.write_all(CONNECT_QUIET).expect("write");
    let input = b"SUB foo 1\r\nPUB foo 5\r\nhello\r\nPING\r\n";
    let mut ours = BytesMut::new();
    let mut decoded = Vec::new();
    for &b in input {
        s.write_all(&[b]).expect("write byte");
        ours.extend_from_slice(&[b]);
        while let Some(op) = decode_client_op(&mut ours, &Limits::default()).expect("valid") {
            decoded.push(op);
        }
    }
    assert_eq!(decoded.len(), 3, "SUB, PUB, PING: {decoded:?}");
    let (ops, closed) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |ops| {
        ops.contains(&ServerOp::Pong)
    });
    assert!(!closed);
    assert_eq!(
        ops,
        vec![
            ServerOp::Msg(Msg {
                subject: "foo".into(),
                sid: "1".into(),
                reply: None,
                headers: None,
                payload: Bytes::from_static(b"hello"),
            }),
            ServerOp::Pong
        ]
    );
}

#[test]
fn info_and_messages_from_nats_server_decode_and_our_encoding_is_echoed() {
    let server = start_server(&[]);
    let (mut s, mut buf) = connect(&server);
    let (ops, _) = read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    let Some(ServerOp::Info(info)) = ops.first() else {
        panic!("expected INFO, got {ops:?}")
    };
    assert_eq!(info.version, "2.9.10");
    assert_eq!(info.proto, 1);
    assert!(info.headers);
    assert_eq!(info.max_payload, 1024 * 1024);
    assert_eq!(info.port, server.port);
    assert!(!info.server_id.is_empty());
    assert!(info.client_id.is_some());

    let mut headers = HeaderMap::new();
    headers.append("Key", "v1");
    headers.append("Key", "v2");
    headers.append("Other", "x: y");
    let mut hb = BytesMut::new();
    headers.encode(&mut hb);
    let hb = hb.freeze();
    let big = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());

    let mut out = BytesMut::new();
    let connect = Connect {
        verbose: false,
        pedantic: false,
        headers: true,
        name: Some("edge-proto-test".into()),
        lang: Some("rust".into()),
        protocol: 1,
        ..Connect::default()
    };
    let sends = [
        ClientOp::Connect(Box::new(connect)),
        ClientOp::Sub(Sub {
            subject: "t.*".into(),
            queue_group: None,
            sid: "1".into(),
        }),
        ClientOp::Sub(Sub {
            subject: "t.>".into(),
            queue_group: Some("q".into()),
            sid: "2".into(),
        }),
        ClientOp::Pub(Pub {
            subject: "t.a".into(),
            reply: Some("_INBOX.r".into()),
            headers: None,
            payload: Bytes::from_static(b"plain"),
        }),
        ClientOp::Pub(Pub {
            subject: "t.b".into(),
            reply: None,
            headers: Some(hb.clone()),
            payload: Bytes::from_static(b"with headers"),
        }),
        ClientOp::Pub(Pub {
            subject: "t.c".into(),
            reply: None,
            headers: None,
            payload: Bytes::new(),
        }),
        ClientOp::Pub(Pub {
            subject: "t.d".into(),
            reply: None,
            headers: None,
            payload: big.clone(),
        }),
        ClientOp::Ping,
    ];
    for op in &sends {
        op.encode(&mut out);
    }
    s.write_all(&out).expect("write");
    let (ops, closed) = read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        ops.contains(&ServerOp::Pong)
    });
    assert!(!closed, "nats-server closed on our encoding: {ops:?}");
    let msgs: Vec<&Msg> = ops
        .iter()
        .filter_map(|o| match o {
            ServerOp::Msg(m) => Some(m),
            _ => None,
        })
        .collect();
    // Every publish reaches both subscriptions (sid 1 and the queue sid 2).
    assert_eq!(msgs.len(), 8, "{ops:?}");
    for (subject, reply, hdrs, payload) in [
        ("t.a", Some("_INBOX.r"), None, Bytes::from_static(b"plain")),
        (
            "t.b",
            None,
            Some(hb.clone()),
            Bytes::from_static(b"with headers"),
        ),
        ("t.c", None, None, Bytes::new()),
        ("t.d", None, None, big.clone()),
    ] {
        for sid in ["1", "2"] {
            let expected = Msg {
                subject: subject.into(),
                sid: sid.into(),
                reply: reply.map(str::to_owned),
                headers: hdrs.clone(),
                payload: payload.clone(),
            };
            assert!(msgs.contains(&&expected), "missing {subject} for sid {sid}");
        }
    }
    let hmsg = msgs.iter().find(|m| m.subject == "t.b").expect("t.b");
    let parsed = HeaderMap::decode(hmsg.headers.as_ref().expect("headers")).expect("header block");
    assert_eq!(parsed, headers);
}

#[test]
fn no_responders_503_decodes() {
    let server = start_server(&[]);
    let (mut s, mut buf) = connect(&server);
    read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    s.write_all(
        b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\n\
          SUB _INBOX.x 9\r\nPUB nobody _INBOX.x 0\r\n\r\nPING\r\n",
    )
    .expect("write");
    let (ops, _) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |ops| {
        ops.contains(&ServerOp::Pong)
    });
    let Some(ServerOp::Msg(m)) = ops.first() else {
        panic!("expected HMSG 503, got {ops:?}")
    };
    assert_eq!((m.subject.as_str(), m.sid.as_str()), ("_INBOX.x", "9"));
    assert!(m.payload.is_empty());
    let h = HeaderMap::decode(m.headers.as_ref().expect("headers")).expect("block");
    assert_eq!(h.status(), Some(503));
}

#[test]
fn session_level_errors_match_server_error_catalogue() {
    // Pedantic publish to an invalid subject: -ERR, connection stays, message still routed.
    let server = start_server(&[]);
    let (mut s, mut buf) = connect(&server);
    read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    s.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":true}\r\nPUB foo..bar 1\r\na\r\nPING\r\n",
    )
    .expect("write");
    let (ops, closed) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |ops| {
        ops.contains(&ServerOp::Pong)
    });
    let expected = ServerError::InvalidPublishSubject;
    assert!(subject::validate_publish("foo..bar").is_err());
    assert_eq!(
        ops.first(),
        Some(&ServerOp::Err(expected.err_message().into_owned()))
    );
    assert_eq!(closed, expected.closes_connection());

    // Verbose connections get +OK.
    let (mut s, mut buf) = connect(&server);
    read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
        !ops.is_empty()
    });
    s.write_all(b"CONNECT {}\r\nSUB a 1\r\nPING\r\n")
        .expect("write");
    let (ops, _) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |ops| {
        ops.contains(&ServerOp::Pong)
    });
    assert_eq!(ops, vec![ServerOp::Ok, ServerOp::Ok, ServerOp::Pong]);
    drop(server);

    // Authorization Violation: an op before CONNECT, or a wrong password.
    let server = start_server(&["--user", "u", "--pass", "p"]);
    let expected = ServerError::AuthorizationViolation;
    for input in [
        &b"PING\r\n"[..],
        b"CONNECT {\"user\":\"u\",\"pass\":\"wrong\"}\r\nPING\r\n",
    ] {
        let (mut s, mut buf) = connect(&server);
        let (ops, _) = read_ops(&mut s, &mut buf, Duration::from_secs(5), |ops| {
            !ops.is_empty()
        });
        let Some(ServerOp::Info(info)) = ops.first() else {
            panic!("INFO expected")
        };
        assert!(info.auth_required);
        let _ = s.write_all(input);
        let (ops, closed) = read_ops(&mut s, &mut buf, Duration::from_secs(3), |_| false);
        assert_eq!(
            ops,
            vec![ServerOp::Err(expected.err_message().into_owned())]
        );
        assert_eq!(closed, expected.closes_connection());
    }
}

#[test]
fn known_deviation_non_utf8_subject() {
    // nats-server accepts a non-UTF-8 subject; we refuse it. Kept visible on purpose.
    let server = start_server(&[]);
    let input = b"PUB f\xffo 1\r\na\r\n";
    let got = run_case(&server, CONNECT_QUIET, input, 1);
    assert_eq!(
        got,
        Observed {
            errs: vec![],
            pongs: 1,
            closed: false
        }
    );
    let e = decode_client_op(&mut BytesMut::from(&input[..]), &Limits::default()).unwrap_err();
    assert_eq!(e, DecodeError::NotUtf8 { verb: "PUB" });
}
