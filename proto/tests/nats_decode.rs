//! Unit tests per NATS op and per decode error, both directions.

// Test helpers outside #[test] fns panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use edge_proto::nats::{
    ClientOp, Connect, DecodeError, HeaderMap, Info, Limits, Msg, Pub, ServerError, ServerOp, Sub,
    Unsub, decode_client_op, decode_server_op, encode_msg,
};
use edge_proto::nats::{LastSubject, decode_client_op_reusing, peek_repeated_pub};
use std::sync::Arc;

fn client(input: &[u8]) -> (Result<Option<ClientOp>, DecodeError>, BytesMut) {
    let mut b = BytesMut::from(input);
    let r = decode_client_op(&mut b, &Limits::default());
    (r, b)
}

fn client_ok(input: &[u8]) -> ClientOp {
    let (r, rest) = client(input);
    let op = r.unwrap().expect("complete op");
    assert!(rest.is_empty(), "left over: {rest:?}");
    op
}

fn client_err(input: &[u8]) -> DecodeError {
    client(input).0.unwrap_err()
}

fn server(input: &[u8]) -> (Result<Option<ServerOp>, DecodeError>, BytesMut) {
    let mut b = BytesMut::from(input);
    let r = decode_server_op(&mut b, &Limits::default());
    (r, b)
}

fn server_ok(input: &[u8]) -> ServerOp {
    let (r, rest) = server(input);
    let op = r.unwrap().expect("complete op");
    assert!(rest.is_empty(), "left over: {rest:?}");
    op
}

// ---- client -> server ops ----

#[test]
fn connect_defaults_follow_nats_server() {
    let ClientOp::Connect(c) = client_ok(b"CONNECT {}\r\n") else {
        panic!()
    };
    assert!(
        c.verbose && c.pedantic && c.echo,
        "nats-server defaults are true"
    );
    assert!(!c.headers && !c.no_responders && !c.tls_required);
    assert_eq!(*c, Connect::default());
}

#[test]
fn connect_all_fields_and_unknown_ignored() {
    let ClientOp::Connect(c) = client_ok(
        br#"connect {"verbose":false,"pedantic":false,"tls_required":true,"auth_token":"t","user":"u","pass":"p","name":"n","lang":"rust","version":"1.0","protocol":1,"echo":false,"sig":"s","jwt":"j","no_responders":true,"headers":true,"unknown":{"a":[1,2]}}"#
            .iter()
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<_>>()
            .as_slice(),
    ) else {
        panic!()
    };
    assert!(!c.verbose && !c.pedantic && c.tls_required && !c.echo);
    assert_eq!(c.auth_token.as_deref(), Some("t"));
    assert_eq!(c.user.as_deref(), Some("u"));
    assert_eq!(c.pass.as_deref(), Some("p"));
    assert_eq!(c.name.as_deref(), Some("n"));
    assert_eq!(c.lang.as_deref(), Some("rust"));
    assert_eq!(c.version.as_deref(), Some("1.0"));
    assert_eq!(c.protocol, 1);
    assert_eq!(c.sig.as_deref(), Some("s"));
    assert_eq!(c.jwt.as_deref(), Some("j"));
    assert!(c.no_responders && c.headers);
}

#[test]
fn connect_needs_no_blank_like_nats_server() {
    assert!(matches!(client_ok(b"CONNECT{}\n"), ClientOp::Connect(_)));
}

#[test]
fn pub_plain_reply_and_tabs() {
    assert_eq!(
        client_ok(b"PUB foo 5\r\nhello\r\n"),
        ClientOp::Pub(Pub {
            subject: "foo".into(),
            reply: None,
            headers: None,
            payload: Bytes::from_static(b"hello"),
        })
    );
    assert_eq!(
        client_ok(b"pub\tfoo \t _INBOX.1  2\r\nhi\r\n"),
        ClientOp::Pub(Pub {
            subject: "foo".into(),
            reply: Some("_INBOX.1".into()),
            headers: None,
            payload: Bytes::from_static(b"hi"),
        })
    );
    // Empty payload, bare LF ending of the control line.
    assert_eq!(
        client_ok(b"PUB foo 0\n\r\n"),
        ClientOp::Pub(Pub {
            subject: "foo".into(),
            reply: None,
            headers: None,
            payload: Bytes::new(),
        })
    );
}

/// The PUB/HPUB line is scanned in one pass (newline and arguments together, 8 bytes at a time):
/// the cases such a scan could get wrong decode as before.
#[test]
fn pub_lines_a_one_pass_scan_could_get_wrong() {
    let publish = |subject: &str, reply: Option<&str>, payload: &'static [u8]| {
        ClientOp::Pub(Pub {
            subject: subject.into(),
            reply: reply.map(Into::into),
            headers: None,
            payload: Bytes::from_static(payload),
        })
    };
    // Tabs and runs of blanks anywhere between the arguments, arguments longer than 8 bytes.
    assert_eq!(
        client_ok(b"PUB\t\t sensors.building-7.floor-3.temperature \t  \t_INBOX.abcdefghijkl\t\t 5 \t\r\nhello\r\n"),
        publish(
            "sensors.building-7.floor-3.temperature",
            Some("_INBOX.abcdefghijkl"),
            b"hello"
        )
    );
    // A CR inside the line is part of an argument, only the one before the LF ends the line.
    assert!(matches!(
        client_err(b"PUB foo 5\r\r\nhello\r\n"),
        DecodeError::BadSize { .. }
    ));
    // The payload may hold CRLF and look like a PUB line: its size decides where it ends.
    let mut b =
        BytesMut::from(&b"PUB foo 21\r\nPUB x 1\r\ny\r\nPUB a 1\r\n\r\nPUB bar 0\r\n\r\n"[..]);
    let mut last = LastSubject::default();
    let first = decode_client_op_reusing(&mut b, &Limits::default(), &mut last).unwrap();
    assert_eq!(
        first,
        Some(publish("foo", None, b"PUB x 1\r\ny\r\nPUB a 1\r\n"))
    );
    let second = decode_client_op_reusing(&mut b, &Limits::default(), &mut last).unwrap();
    assert_eq!(second, Some(publish("bar", None, b"")));
    assert!(b.is_empty());
    // Split across reads at every byte, the CRLF of the line and of the payload included:
    // nothing is consumed until the op is complete, then it decodes whole.
    let input = b"PUB sensors.temperature.long-name _INBOX.reply 12\r\nhello\r\nworld\r\nPING\r\n";
    let expected = publish(
        "sensors.temperature.long-name",
        Some("_INBOX.reply"),
        b"hello\r\nworld",
    );
    let pub_len = input.len() - b"PING\r\n".len();
    for cut in 0..pub_len {
        let mut b = BytesMut::from(&input[..cut]);
        let mut last = LastSubject::default();
        let early = decode_client_op_reusing(&mut b, &Limits::default(), &mut last);
        assert_eq!(early, Ok(None), "cut at {cut}");
        assert_eq!(b.len(), cut, "nothing consumed at {cut}");
        b.extend_from_slice(&input[cut..]);
        let op = decode_client_op_reusing(&mut b, &Limits::default(), &mut last);
        assert_eq!(op, Ok(Some(expected.clone())), "cut at {cut}");
        assert_eq!(&b[..], b"PING\r\n", "cut at {cut}");
    }
    // Sizes the scan could get wrong ('+', a sign, a tail, too many digits): in
    // `bad_sizes_close_silently`.
    // Nine digits with leading zeros are a size (nats-server's parseSize).
    assert_eq!(
        client_ok(b"PUB foo 000000005\r\nhello\r\n"),
        publish("foo", None, b"hello")
    );
    // The limits still hold on the scanned path: argument bytes and payload size.
    let limits = Limits {
        max_control_line: 12,
        max_payload: 4,
    };
    let dec = |s: &[u8]| decode_client_op(&mut BytesMut::from(s), &limits);
    assert!(
        dec(b"PUB abcdefghij 4\r\nabcd\r\n").unwrap().is_some(),
        "12 bytes"
    );
    assert_eq!(
        dec(b"PUB abcdefghijk 4\r\nabcd\r\n"),
        Err(DecodeError::MaxControlLine { len: 13, max: 12 })
    );
    assert_eq!(
        dec(b"PUB abcdefgh 5\r\nabcde\r\n"),
        Err(DecodeError::MaxPayload {
            verb: "PUB",
            size: 5,
            max: 4
        })
    );
}

#[test]
fn pub_payload_is_zero_copy_slice_of_input() {
    let mut b = BytesMut::with_capacity(64);
    b.extend_from_slice(b"PUB foo 5\r\nhello\r\n");
    let base = b.as_ptr() as usize;
    let Some(ClientOp::Pub(p)) = decode_client_op(&mut b, &Limits::default()).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        base + 11,
        "payload points into the input"
    );
}

/// A connection's decoder hands out one shared subject while PUBs repeat it (the session tells
/// "same subject" by pointer), a new one when it changes, and still refuses a bad subject.
#[test]
fn a_repeated_pub_subject_is_one_shared_arc() {
    let mut last = LastSubject::default();
    let mut b = BytesMut::from(
        &b"PUB a.b 1\r\nx\r\nHPUB a.b 12 13\r\nNATS/1.0\r\n\r\ny\r\nPUB a.c 1\r\nz\r\nPUB a.c 1\r\n"[..],
    );
    let mut subjects = Vec::new();
    while let Some(op) = decode_client_op_reusing(&mut b, &Limits::default(), &mut last).unwrap() {
        let ClientOp::Pub(p) = op else {
            panic!("{op:?}")
        };
        subjects.push(p.subject);
    }
    let names: Vec<&str> = subjects.iter().map(|s| &**s).collect();
    assert_eq!(names, ["a.b", "a.b", "a.c"]);
    assert!(
        Arc::ptr_eq(&subjects[0], &subjects[1]),
        "HPUB repeating a PUB's subject"
    );
    assert!(!Arc::ptr_eq(&subjects[1], &subjects[2]));
    // The incomplete PUB a.c waits for its payload; complete, it shares the subject again.
    b.extend_from_slice(b"w\r\n");
    let Some(ClientOp::Pub(p)) =
        decode_client_op_reusing(&mut b, &Limits::default(), &mut last).unwrap()
    else {
        panic!()
    };
    assert!(Arc::ptr_eq(&p.subject, &subjects[2]));
    assert!(Arc::ptr_eq(&p.subject, last.get().unwrap()));
    let mut bad = BytesMut::from(&b"PUB a.\xff 1\r\nx\r\n"[..]);
    assert_eq!(
        decode_client_op_reusing(&mut bad, &Limits::default(), &mut last).unwrap_err(),
        DecodeError::NotUtf8 { verb: "PUB" }
    );
}

#[test]
fn hpub_splits_headers_and_payload() {
    let hdr = b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n";
    let mut input = format!("HPUB foo r {} {}\r\n", hdr.len(), hdr.len() + 3).into_bytes();
    input.extend_from_slice(hdr);
    input.extend_from_slice(b"abc\r\n");
    let ClientOp::Pub(p) = client_ok(&input) else {
        panic!()
    };
    assert_eq!(p.reply, Some("r".into()));
    assert_eq!(p.payload, Bytes::from_static(b"abc"));
    let h = HeaderMap::decode(p.headers.as_ref().unwrap()).unwrap();
    assert_eq!(h.get_all("A").collect::<Vec<_>>(), vec!["1", "2"]);
}

#[test]
fn sub_with_and_without_queue() {
    assert_eq!(
        client_ok(b"SUB foo.* 1\r\n"),
        ClientOp::Sub(Sub {
            subject: "foo.*".into(),
            queue_group: None,
            sid: "1".into()
        })
    );
    assert_eq!(
        client_ok(b"sub foo.> workers 22 \r\n"),
        ClientOp::Sub(Sub {
            subject: "foo.>".into(),
            queue_group: Some("workers".into()),
            sid: "22".into()
        })
    );
}

#[test]
fn unsub_max_msgs_like_nats_server() {
    assert_eq!(
        client_ok(b"UNSUB 1\r\n"),
        ClientOp::Unsub(Unsub {
            sid: "1".into(),
            max_msgs: None
        })
    );
    assert_eq!(
        client_ok(b"UNSUB 1 10\r\n"),
        ClientOp::Unsub(Unsub {
            sid: "1".into(),
            max_msgs: Some(10)
        })
    );
    // nats-server: 0 or an unparsable count means "unsubscribe now".
    for line in [
        &b"UNSUB 1 0\r\n"[..],
        b"UNSUB 1 x\r\n",
        b"UNSUB 1 9999999999\r\n",
    ] {
        assert_eq!(
            client_ok(line),
            ClientOp::Unsub(Unsub {
                sid: "1".into(),
                max_msgs: None
            })
        );
    }
}

#[test]
fn ping_pong_ignore_trailing_bytes() {
    assert_eq!(client_ok(b"PING\r\n"), ClientOp::Ping);
    assert_eq!(client_ok(b"ping\n"), ClientOp::Ping);
    assert_eq!(
        client_ok(b"PINGX\r\n"),
        ClientOp::Ping,
        "nats-server answers PONG"
    );
    assert_eq!(client_ok(b"PONG\r\n"), ClientOp::Pong);
}

#[test]
fn client_info_and_ok_are_skipped() {
    assert_eq!(client_ok(b"INFO {}\r\n+OK\r\nPING\r\n"), ClientOp::Ping);
    assert_eq!(client(b"+OK\r\n").0, Ok(None));
}

#[test]
fn pipelined_ops_decode_one_at_a_time() {
    let mut b = BytesMut::from(&b"SUB a 1\r\nPUB a 1\r\nx\r\nPING\r\n"[..]);
    let l = Limits::default();
    assert!(matches!(
        decode_client_op(&mut b, &l),
        Ok(Some(ClientOp::Sub(_)))
    ));
    assert!(matches!(
        decode_client_op(&mut b, &l),
        Ok(Some(ClientOp::Pub(_)))
    ));
    assert_eq!(decode_client_op(&mut b, &l), Ok(Some(ClientOp::Ping)));
    assert_eq!(decode_client_op(&mut b, &l), Ok(None));
}

#[test]
fn every_prefix_needs_more_bytes_and_consumes_nothing() {
    let full: &[u8] = b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
    for n in 0..full.len() {
        let (r, rest) = client(&full[..n]);
        assert_eq!(r, Ok(None), "prefix {n}");
        assert_eq!(&rest[..], &full[..n]);
    }
    assert!(matches!(client_ok(full), ClientOp::Pub(_)));
}

// ---- server -> client ops ----

#[test]
fn info_decodes_nats_server_fields() {
    let ServerOp::Info(i) = server_ok(
        br#"INFO {"server_id":"NABC","server_name":"s1","version":"2.9.10","proto":1,"go":"go1.19","host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"client_id":5,"client_ip":"127.0.0.1","auth_required":true,"xkey":"ignored"}"#
            .iter()
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<_>>()
            .as_slice(),
    ) else {
        panic!()
    };
    assert_eq!(
        *i,
        Info {
            server_id: "NABC".into(),
            server_name: "s1".into(),
            version: "2.9.10".into(),
            go: Some("go1.19".into()),
            proto: 1,
            host: "127.0.0.1".into(),
            port: 4222,
            headers: true,
            max_payload: 1_048_576,
            client_id: Some(5),
            client_ip: Some("127.0.0.1".into()),
            auth_required: true,
            ..Info::default()
        }
    );
}

#[test]
fn msg_and_hmsg() {
    assert_eq!(
        server_ok(b"MSG foo 1 5\r\nhello\r\n"),
        ServerOp::Msg(Msg {
            subject: "foo".into(),
            sid: "1".into(),
            reply: None,
            headers: None,
            payload: Bytes::from_static(b"hello"),
        })
    );
    let ServerOp::Msg(m) = server_ok(b"HMSG foo 1 r 16 16\r\nNATS/1.0 503\r\n\r\n\r\n") else {
        panic!()
    };
    assert_eq!(m.reply.as_deref(), Some("r"));
    assert!(m.payload.is_empty());
    assert_eq!(
        HeaderMap::decode(m.headers.as_ref().unwrap())
            .unwrap()
            .status(),
        Some(503)
    );
}

#[test]
fn server_control_ops() {
    assert_eq!(server_ok(b"PING\r\n"), ServerOp::Ping);
    assert_eq!(server_ok(b"PONG\r\n"), ServerOp::Pong);
    assert_eq!(server_ok(b"+OK\r\n"), ServerOp::Ok);
    assert_eq!(
        server_ok(b"-ERR 'Unknown Protocol Operation'\r\n"),
        ServerOp::Err("Unknown Protocol Operation".into())
    );
    assert_eq!(server_ok(b"-ERR plain\r\n"), ServerOp::Err("plain".into()));
}

#[test]
fn encode_msg_helper_matches_op_encoder() {
    let mut a = BytesMut::new();
    encode_msg(&mut a, "s", "9", Some("r"), Some(b"NATS/1.0\r\n\r\n"), b"x");
    assert_eq!(&a[..], b"HMSG s 9 r 12 13\r\nNATS/1.0\r\n\r\nx\r\n");
    let mut b = BytesMut::new();
    encode_msg(&mut b, "s", "9", None, None, b"x");
    assert_eq!(&b[..], b"MSG s 9 1\r\nx\r\n");
}

// ---- errors ----

#[test]
fn unknown_verb_is_refused_at_the_first_wrong_byte() {
    let e = client_err(b"FOO");
    assert_eq!(e.err_message(), Some("Unknown Protocol Operation"));
    assert!(e.closes_connection());
    assert!(matches!(
        client_err(b"PX"),
        DecodeError::UnknownOperation { offset: 1, .. }
    ));
    assert!(matches!(
        client_err(b"\r\n"),
        DecodeError::UnknownOperation { offset: 0, .. }
    ));
    // A verb with arguments must be followed by a blank.
    assert!(matches!(
        client_err(b"PUB\r\n"),
        DecodeError::UnknownOperation { offset: 3, .. }
    ));
    assert!(matches!(
        client_err(b"SUBX"),
        DecodeError::UnknownOperation { .. }
    ));
    // Server-only verbs from a client.
    assert!(matches!(
        client_err(b"MSG foo 1 1\r\na\r\n"),
        DecodeError::UnknownOperation { .. }
    ));
    // Client-only verbs from a server.
    assert!(matches!(
        server(b"PUB foo 1\r\na\r\n").0,
        Err(DecodeError::UnknownOperation { .. })
    ));
}

#[test]
fn payload_not_followed_by_crlf() {
    for input in [
        &b"PUB foo 3\r\nabcd\r\n"[..],
        b"PUB foo 1\r\na\n",
        b"PUB foo 1\r\na\rx",
    ] {
        let e = client_err(input);
        assert!(
            matches!(e, DecodeError::BadPayloadTerminator { .. }),
            "{e:?}"
        );
        assert_eq!(e.err_message(), Some("Unknown Protocol Operation"));
        assert!(e.closes_connection());
    }
}

#[test]
fn max_payload_is_checked_before_the_payload_arrives() {
    let limits = Limits {
        max_payload: 10,
        ..Limits::default()
    };
    let mut b = BytesMut::from(&b"PUB foo 11\r\n"[..]);
    let e = decode_client_op(&mut b, &limits).unwrap_err();
    assert_eq!(
        e,
        DecodeError::MaxPayload {
            verb: "PUB",
            size: 11,
            max: 10
        }
    );
    assert_eq!(e.err_message(), Some("Maximum Payload Violation"));
    assert!(e.closes_connection());
    // HPUB counts headers + body.
    let mut b = BytesMut::from(&b"HPUB foo 5 11\r\n"[..]);
    assert!(matches!(
        decode_client_op(&mut b, &limits),
        Err(DecodeError::MaxPayload { size: 11, .. })
    ));
    // Exactly the limit is fine.
    let mut b = BytesMut::from(&b"PUB foo 10\r\n0123456789\r\n"[..]);
    assert!(decode_client_op(&mut b, &limits).unwrap().is_some());
    // Default is nats-server's 1 MiB.
    assert!(matches!(
        client_err(b"PUB foo 1048577\r\n"),
        DecodeError::MaxPayload { .. }
    ));
}

#[test]
fn max_control_line_counts_arguments_like_nats_server() {
    let limits = Limits {
        max_control_line: 8,
        ..Limits::default()
    };
    let dec = |s: &[u8]| decode_client_op(&mut BytesMut::from(s), &limits);
    assert!(
        dec(b"SUB abcd 123\r\n").unwrap().is_some(),
        "8 argument bytes are allowed"
    );
    let e = dec(b"SUB abcd 1234\r\n").unwrap_err();
    assert_eq!(e, DecodeError::MaxControlLine { len: 9, max: 8 });
    assert_eq!(e.err_message(), Some("maximum control line exceeded"));
    assert!(e.closes_connection());
    // Incomplete lines are refused as soon as they are too long...
    assert!(matches!(
        dec(b"SUB abcd 1234"),
        Err(DecodeError::MaxControlLine { .. })
    ));
    // ...but a trailing CR is not counted while waiting for the LF.
    assert_eq!(dec(b"SUB abcd 123\r"), Ok(None));
    // Unbounded junk after PING and endless blanks are bounded too.
    assert!(matches!(
        dec(b"PING0123456789"),
        Err(DecodeError::MaxControlLine { .. })
    ));
    assert!(matches!(
        dec(b"SUB           "),
        Err(DecodeError::MaxControlLine { .. })
    ));
}

#[test]
fn bad_argument_counts_close_silently() {
    for (input, verb) in [
        (&b"PUB foo\r\n"[..], "PUB"),
        (b"PUB \r\n", "PUB"),
        (b"PUB a b c 1\r\n", "PUB"),
        (b"PUB a b c d e f g 1\r\n", "PUB"),
        (b"HPUB a b c d e 1 1\r\n", "HPUB"),
        (b"HPUB foo 3\r\n", "HPUB"),
        (b"SUB foo\r\n", "SUB"),
        (b"SUB a b c d\r\n", "SUB"),
        (b"UNSUB \r\n", "UNSUB"),
        (b"UNSUB 1 2 3\r\n", "UNSUB"),
    ] {
        let e = client_err(input);
        assert!(
            matches!(&e, DecodeError::BadArguments { verb: v, .. } if *v == verb),
            "{input:?}: {e:?}"
        );
        assert_eq!(e.err_message(), None, "nats-server sends no -ERR");
        assert!(e.closes_connection());
    }
    assert!(matches!(
        server(b"MSG foo 1\r\n").0,
        Err(DecodeError::BadArguments { verb: "MSG", .. })
    ));
    // One argument more than HMSG's longest form (the most any op takes) is still refused.
    assert!(matches!(
        server(b"HMSG foo 1 reply extra 2 3\r\nab\r\n").0,
        Err(DecodeError::BadArguments { verb: "HMSG", .. })
    ));
    assert!(matches!(
        server(b"HMSG foo 1 reply a b c 2 3\r\nab\r\n").0,
        Err(DecodeError::BadArguments { verb: "HMSG", .. })
    ));
}

#[test]
fn bad_sizes_close_silently() {
    // Only 1-9 ASCII digits; a '+' (which Rust's `usize::from_str` would take), a sign, a
    // blank-free tail, or more digits than fit are refused before any payload is awaited.
    for input in [
        &b"PUB foo x\r\n"[..],
        b"PUB foo -1\r\n",
        b"PUB foo 1234567890\r\n",
        b"HPUB foo x 3\r\n",
        b"HPUB foo 3 y\r\n",
        b"PUB foo +5\r\nhello\r\n",
        b"PUB foo -5\r\n",
        b"PUB foo 5x\r\n",
        b"PUB foo 0x5\r\n",
        b"PUB foo 99999999999999999999\r\n",
        b"PUB foo 18446744073709551621\r\n",
        b"HPUB foo +2 5\r\n",
        b"HPUB foo 2 +5\r\n",
    ] {
        let e = client_err(input);
        assert!(matches!(e, DecodeError::BadSize { .. }), "{input:?}: {e:?}");
        assert_eq!(e.err_message(), None);
        assert!(e.closes_connection());
    }
    let e = client_err(b"HPUB foo 5 3\r\n");
    assert_eq!(
        e,
        DecodeError::HeaderLargerThanTotal {
            verb: "HPUB",
            header: 5,
            total: 3
        }
    );
    assert_eq!(e.err_message(), None);
}

#[test]
fn invalid_sub_subject_keeps_the_connection_and_consumes_the_line() {
    let mut b = BytesMut::from(&b"SUB foo.. 1\r\nSUB foo.>.bar 2\r\nPING\r\n"[..]);
    let l = Limits::default();
    let e = decode_client_op(&mut b, &l).unwrap_err();
    assert_eq!(
        e,
        DecodeError::InvalidSubject {
            subject: "foo..".into()
        }
    );
    assert_eq!(e.err_message(), Some("Invalid Subject"));
    assert!(!e.closes_connection());
    assert!(matches!(
        decode_client_op(&mut b, &l),
        Err(DecodeError::InvalidSubject { .. })
    ));
    assert_eq!(decode_client_op(&mut b, &l), Ok(Some(ClientOp::Ping)));
}

#[test]
fn connect_errors() {
    for input in [
        &b"CONNECT\r\n"[..],
        b"CONNECT {bad\r\n",
        b"CONNECT {} x\r\n",
    ] {
        let e = client_err(input);
        assert!(matches!(e, DecodeError::BadConnectJson { .. }), "{e:?}");
        assert_eq!(e.err_message(), None);
        assert!(e.closes_connection());
    }
    for (input, protocol) in [
        (&b"CONNECT {\"protocol\":2}\r\n"[..], 2),
        (b"CONNECT {\"protocol\":-1}\r\n", -1),
    ] {
        let e = client_err(input);
        assert_eq!(e, DecodeError::InvalidClientProtocol { protocol });
        assert_eq!(e.err_message(), Some("invalid client protocol"));
        assert!(e.closes_connection());
    }
    let e = client_err(b"CONNECT {\"no_responders\":true}\r\n");
    assert_eq!(e, DecodeError::NoRespondersRequiresHeaders);
    assert_eq!(
        e.err_message(),
        Some("no responders requires headers support")
    );
    assert!(e.closes_connection());
}

#[test]
fn client_err_and_bad_info_close_silently() {
    let e = client_err(b"-ERR 'x'\r\n");
    assert_eq!(
        e,
        DecodeError::ClientSentErr {
            message: "'x'".into()
        }
    );
    assert_eq!(e.err_message(), None);
    assert!(e.closes_connection());
    assert!(matches!(
        client_err(b"INFO {\r\n"),
        DecodeError::BadInfoJson { .. }
    ));
    assert!(matches!(
        server(b"INFO nope\r\n").0,
        Err(DecodeError::BadInfoJson { .. })
    ));
}

#[test]
fn non_utf8_subjects_are_refused() {
    let e = client_err(b"PUB f\xffo 1\r\na\r\n");
    assert_eq!(e, DecodeError::NotUtf8 { verb: "PUB" });
    assert_eq!(e.err_message(), Some("Invalid Subject"));
    assert!(e.closes_connection());
}

#[test]
fn err_line_has_nats_server_quoting() {
    assert_eq!(
        client_err(b"FOO").err_line().as_deref(),
        Some("-ERR 'Unknown Protocol Operation'\r\n")
    );
    assert_eq!(client_err(b"PUB foo\r\n").err_line(), None);
}

#[test]
fn server_error_catalogue() {
    let cases: &[(ServerError, &str, bool)] = &[
        (
            ServerError::UnknownProtocolOperation,
            "Unknown Protocol Operation",
            true,
        ),
        (
            ServerError::MaxPayloadViolation,
            "Maximum Payload Violation",
            true,
        ),
        (
            ServerError::MaxControlLineExceeded,
            "maximum control line exceeded",
            true,
        ),
        (ServerError::InvalidSubject, "Invalid Subject", false),
        (
            ServerError::InvalidPublishSubject,
            "Invalid Publish Subject",
            false,
        ),
        (
            ServerError::AuthorizationViolation,
            "Authorization Violation",
            true,
        ),
        (
            ServerError::AuthenticationTimeout,
            "Authentication Timeout",
            true,
        ),
        (ServerError::StaleConnection, "Stale Connection", true),
        (ServerError::SlowConsumer, "Slow Consumer", true),
        (
            ServerError::MaxConnectionsExceeded,
            "maximum connections exceeded",
            true,
        ),
        (
            ServerError::MaxSubscriptionsExceeded,
            "maximum subscriptions exceeded",
            false,
        ),
        (
            ServerError::InvalidClientProtocol,
            "invalid client protocol",
            true,
        ),
        (
            ServerError::NoRespondersRequiresHeaders,
            "no responders requires headers support",
            true,
        ),
        (
            ServerError::TlsRequired,
            "Secure Connection - TLS Required",
            true,
        ),
        (
            ServerError::PublishPermissionViolation("a.b".into()),
            "Permissions Violation for Publish to \"a.b\"",
            false,
        ),
        (
            ServerError::SubscribePermissionViolation("a.>".into()),
            "Permissions Violation for Subscription to \"a.>\"",
            false,
        ),
    ];
    for (e, text, closes) in cases {
        assert_eq!(e.err_message(), *text);
        assert_eq!(e.closes_connection(), *closes, "{e:?}");
        assert_eq!(e.err_line(), format!("-ERR '{text}'\r\n"));
    }
}

/// A decoder that saw `PUB <subject> …` before (the connection's `LastSubject`).
fn last_after(subject: &str) -> LastSubject {
    let mut last = LastSubject::default();
    let mut b = BytesMut::from(format!("PUB {subject} 1\r\nx\r\n").as_bytes());
    decode_client_op_reusing(&mut b, &Limits::default(), &mut last).unwrap();
    last
}

/// `peek_repeated_pub` finds a repeated PUB where it is whole, and nothing else.
#[test]
fn a_repeated_pub_is_peeked_where_whole() {
    let last = last_after("sensors.temp");
    let limits = Limits::default();
    let input = b"PUB sensors.temp 5\r\nhello\r\nPING\r\n";
    let found = peek_repeated_pub(input, &limits, &last).expect("a repeated PUB");
    assert_eq!(&input[found.payload.clone()], b"hello");
    assert_eq!(found.len, input.len() - b"PING\r\n".len());
    // Incomplete at every cut: not yet.
    for cut in 0..found.len {
        assert_eq!(
            peek_repeated_pub(&input[..cut], &limits, &last),
            None,
            "cut {cut}"
        );
    }
    for other in [
        &b"PUB sensors.temp _INBOX.r 5\r\nhello\r\n"[..], // a reply subject
        b"PUB sensors.temps 5\r\nhello\r\n",              // another subject
        b"HPUB sensors.temp 12 17\r\nNATS/1.0\r\n\r\nhello\r\n",
        b"PUB sensors.temp 5\r\nhelloX\r\n", // a bad terminator: the decoder's error
        b"PUB sensors.temp 5000000\r\n",     // over max_payload: the decoder's error
        b"PING\r\n",
    ] {
        assert_eq!(peek_repeated_pub(other, &limits, &last), None, "{other:?}");
    }
    assert_eq!(
        peek_repeated_pub(input, &limits, &LastSubject::default()),
        None,
        "no PUB before"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]

    /// Where `peek_repeated_pub` answers, the decoder gives that PUB: the last subject shared,
    /// no reply, no headers, the payload it names, the length it says consumed. And where the
    /// decoder gives a PUB of the last subject written `PUB <subject> <size>`, it answers.
    #[test]
    fn a_peeked_pub_is_what_the_decoder_gives(
        verb in proptest::sample::select(vec!["PUB ", "PUB ", "PUB ", "HPUB ", "PUB  ", "pub "]),
        same in proptest::sample::select(vec![true, true, true, false]),
        reply in proptest::sample::select(vec!["", "", " _INBOX.a.1", "\t_INBOX.b"]),
        size in proptest::sample::select(vec!["5", "5", "0", "05", "6", "4", "-1", "x", "99999999999"]),
        payload in proptest::sample::select(vec!["hello", "", "hell", "hello!", "he\r\nl"]),
        end in proptest::sample::select(vec!["\r\n", "\r\n", "\n", "\r", "", "X\r\n"]),
        rest in proptest::sample::select(vec!["", "PING\r\n", "PUB s.t 1\r\nx\r\n"]),
        cut in 0usize..64,
        max_payload in proptest::sample::select(vec![4usize, 5, 1 << 20]),
    ) {
        let last = last_after("s.t");
        let subject = if same { "s.t" } else { "s.u" };
        let input = format!("{verb}{subject}{reply} {size}\r\n{payload}{end}{rest}");
        let input = &input.as_bytes()[..input.len().min(cut.max(input.len() / 2))];
        let limits = Limits { max_payload, ..Limits::default() };
        let found = peek_repeated_pub(input, &limits, &last);
        let mut b = BytesMut::from(input);
        let mut decoder_last = last.clone();
        let op = decode_client_op_reusing(&mut b, &limits, &mut decoder_last);
        if verb == "PUB " && same && reply.is_empty() && matches!(op, Ok(Some(ClientOp::Pub(_)))) {
            proptest::prop_assert!(found.is_some(), "not peeked: {:?}", input);
        }
        if let Some(found) = found {
            let Ok(Some(ClientOp::Pub(p))) = op else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{op:?}")));
            };
            proptest::prop_assert!(Arc::ptr_eq(&p.subject, last.get().unwrap()));
            proptest::prop_assert!(p.reply.is_none() && p.headers.is_none());
            proptest::prop_assert_eq!(&p.payload[..], &input[found.payload.clone()]);
            proptest::prop_assert_eq!(input.len() - b.len(), found.len);
            proptest::prop_assert!(Arc::ptr_eq(decoder_last.get().unwrap(), last.get().unwrap()));
        }
    }
}

/// `awaited_op_len` names the whole length of a PUB or HPUB (line, payload, CRLF) from every
/// prefix that holds its control line and not all of its payload, and nothing otherwise;
/// where it names one, the decoder still waits for more bytes.
#[test]
fn awaited_op_len_names_a_pub_once_its_line_is_in() {
    use edge_proto::nats::awaited_op_len;
    let limits = Limits::default();
    let big = format!("PUB t.big {}\r\n{}\r\n", 70_000, "x".repeat(70_000));
    let cases: [&[u8]; 6] = [
        b"PUB a 10\r\n0123456789\r\n",
        b"pub a reply.to 3\r\nabc\r\n",
        b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
        b"HPUB a r 12 12\r\nNATS/1.0\r\n\r\n\r\n",
        b"PUB\ta\t\t0\r\n\r\n",
        big.as_bytes(),
    ];
    for op in cases {
        let line = op.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        for cut in 0..=op.len() {
            let awaited = awaited_op_len(&op[..cut], &limits);
            let expected = (cut >= line && cut < op.len()).then_some(op.len());
            assert_eq!(awaited, expected, "{:?} cut at {cut}", &op[..line]);
            if awaited.is_some() {
                let (decoded, _) = client(&op[..cut]);
                assert!(matches!(decoded, Ok(None)), "{decoded:?}");
            }
        }
    }
    // Other ops, and PUB lines the decoder refuses, name nothing.
    for other in [
        &b"PING\r\n"[..],
        b"SUB a 1\r\n",
        b"PUB a\r\n",
        b"PUB a x\r\nabc",
        b"PUB a 2000000\r\nabc",
        b"HPUB a 20 10\r\nNATS/1.0\r\n",
    ] {
        assert_eq!(awaited_op_len(other, &limits), None, "{other:?}");
    }
}
