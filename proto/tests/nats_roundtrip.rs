//! Property tests: every op survives encode → decode unchanged (whole, split at any byte, and
//! pipelined), header blocks round-trip, and the decoders never panic or stall on any input.

// Test helpers outside #[test] fns panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use edge_proto::nats::{
    ClientOp, Connect, DecodeError, HeaderMap, Info, Limits, Msg, Pub, ServerOp, Sub, Unsub,
    decode_client_op, decode_server_op,
};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_$-]{1,6}"
}

fn literal_subject() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
}

fn sub_subject() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![token(), Just("*".to_string())], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut t, fwc)| {
            if fwc {
                t.push(">".into());
            }
            t.join(".")
        })
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}"
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn connect() -> impl Strategy<Value = Connect> {
    (
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (
            prop::option::of(word()),
            prop::option::of(word()),
            prop::option::of(word()),
            prop::option::of(word()),
        ),
        (
            prop::option::of(word()),
            prop::option::of(word()),
            0i64..=1,
            prop::option::of("[ -~]{0,20}"),
        ),
        (
            prop::option::of(word()),
            prop::option::of(word()),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (verbose, pedantic, tls_required, echo),
                (auth_token, user, pass, name),
                (lang, version, protocol, sig),
                (jwt, nkey, no_responders, headers),
            )| Connect {
                verbose,
                pedantic,
                tls_required,
                auth_token,
                user,
                pass,
                name,
                lang,
                version,
                protocol,
                echo,
                sig,
                jwt,
                nkey,
                // nats-server refuses no_responders without headers.
                no_responders: no_responders && headers,
                headers,
            },
        )
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        connect().prop_map(|c| ClientOp::Connect(Box::new(c))),
        (
            literal_subject(),
            prop::option::of(literal_subject()),
            prop::option::of(bytes_up_to(48)),
            bytes_up_to(96)
        )
            .prop_map(|(subject, reply, headers, payload)| ClientOp::Pub(Pub {
                subject: subject.into(),
                reply: reply.map(Into::into),
                headers,
                payload
            })),
        (sub_subject(), prop::option::of(token()), token()).prop_map(
            |(subject, queue_group, sid)| ClientOp::Sub(Sub {
                subject,
                queue_group,
                sid
            })
        ),
        (token(), prop::option::of(1u64..=999_999_999))
            .prop_map(|(sid, max_msgs)| ClientOp::Unsub(Unsub { sid, max_msgs })),
        Just(ClientOp::Ping),
        Just(ClientOp::Pong),
    ]
}

fn info() -> impl Strategy<Value = Info> {
    (
        (word(), word(), word(), prop::option::of(word()), 0i64..3),
        (word(), any::<u16>(), any::<bool>(), 0i64..100_000_000),
        (prop::option::of(any::<u64>()), prop::option::of(word())),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (
            prop::option::of(word()),
            prop::option::of(prop::collection::vec(word(), 0..3)),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (server_id, server_name, version, go, proto),
                (host, port, headers, max_payload),
                (client_id, client_ip),
                (auth_required, tls_required, tls_verify, tls_available),
                (nonce, connect_urls, ldm, jetstream),
            )| Info {
                server_id,
                server_name,
                version,
                go,
                proto,
                host,
                port,
                headers,
                max_payload,
                client_id,
                client_ip,
                auth_required,
                tls_required,
                tls_verify,
                tls_available,
                nonce,
                connect_urls,
                ldm,
                jetstream,
            },
        )
}

fn server_op() -> impl Strategy<Value = ServerOp> {
    prop_oneof![
        info().prop_map(|i| ServerOp::Info(Box::new(i))),
        (
            literal_subject(),
            token(),
            prop::option::of(literal_subject()),
            prop::option::of(bytes_up_to(48)),
            bytes_up_to(96)
        )
            .prop_map(
                |(subject, sid, reply, headers, payload)| ServerOp::Msg(Msg {
                    subject,
                    sid,
                    reply,
                    headers,
                    payload
                })
            ),
        Just(ServerOp::Ping),
        Just(ServerOp::Pong),
        Just(ServerOp::Ok),
        "[a-zA-Z0-9][a-zA-Z0-9 .,:\"-]{0,30}".prop_map(ServerOp::Err),
    ]
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    (
        prop::option::of((
            100u16..=999,
            prop::option::of("[A-Za-z]([A-Za-z ]{0,10}[A-Za-z])?"),
        )),
        prop::collection::vec(
            ("[A-Za-z][A-Za-z0-9-]{0,8}", "([!-~]([ -~]{0,10}[!-~])?)?"),
            0..6,
        ),
    )
        .prop_map(|(status, entries)| {
            let mut h = match status {
                Some((code, desc)) => HeaderMap::with_status(code, desc.as_deref()),
                None => HeaderMap::new(),
            };
            for (k, v) in entries {
                h.append(k, v);
            }
            h
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_op_roundtrip(op in client_op(), split in any::<prop::sample::Index>()) {
        let wire = op.to_bytes();
        let limits = Limits::default();
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decode_client_op(&mut buf, &limits), Ok(Some(op.clone())));
        prop_assert!(buf.is_empty());
        // Streaming: any strict prefix needs more and consumes nothing.
        let cut = split.index(wire.len());
        let mut part = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(decode_client_op(&mut part, &limits), Ok(None));
        prop_assert_eq!(part.len(), cut);
        part.extend_from_slice(&wire[cut..]);
        prop_assert_eq!(decode_client_op(&mut part, &limits), Ok(Some(op)));
    }

    #[test]
    fn server_op_roundtrip(op in server_op(), split in any::<prop::sample::Index>()) {
        let wire = op.to_bytes();
        let limits = Limits::default();
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decode_server_op(&mut buf, &limits), Ok(Some(op.clone())));
        prop_assert!(buf.is_empty());
        let cut = split.index(wire.len());
        let mut part = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(decode_server_op(&mut part, &limits), Ok(None));
        part.extend_from_slice(&wire[cut..]);
        prop_assert_eq!(decode_server_op(&mut part, &limits), Ok(Some(op)));
    }

    #[test]
    fn pipelined_client_ops_roundtrip(ops in prop::collection::vec(client_op(), 1..8)) {
        let mut buf = BytesMut::new();
        for op in &ops {
            op.encode(&mut buf);
        }
        let limits = Limits::default();
        let mut out = Vec::new();
        while let Some(op) = decode_client_op(&mut buf, &limits).unwrap() {
            out.push(op);
        }
        prop_assert_eq!(out, ops);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn header_map_roundtrip(h in header_map()) {
        let mut b = BytesMut::new();
        h.encode(&mut b);
        prop_assert_eq!(b.len(), h.encoded_len());
        prop_assert_eq!(HeaderMap::decode(&b), Ok(h));
    }

    #[test]
    fn hpub_carries_encoded_headers(h in header_map(), subject in literal_subject(), payload in bytes_up_to(64)) {
        let mut hb = BytesMut::new();
        h.encode(&mut hb);
        let op = ClientOp::Pub(Pub { subject: subject.into(), reply: None, headers: Some(hb.freeze()), payload });
        let mut buf = BytesMut::from(&op.to_bytes()[..]);
        let Some(ClientOp::Pub(p)) = decode_client_op(&mut buf, &Limits::default()).unwrap() else {
            panic!("not a pub");
        };
        prop_assert_eq!(HeaderMap::decode(p.headers.as_deref().unwrap_or_default()), Ok(h));
    }
}

/// Drives a decoder over `input` like a connection would; panics if it stalls.
fn drive<T>(
    input: &[u8],
    limits: &Limits,
    decode: fn(&mut BytesMut, &Limits) -> Result<Option<T>, DecodeError>,
) {
    let mut buf = BytesMut::from(input);
    loop {
        let before = buf.len();
        match decode(&mut buf, limits) {
            Ok(Some(_)) => assert!(buf.len() < before, "op decoded without consuming input"),
            Ok(None) => return,
            Err(e) if !e.closes_connection() => {
                assert!(
                    buf.len() < before,
                    "non-fatal error without consuming input"
                );
                let _ = (e.err_message(), e.to_string());
            }
            Err(e) => {
                let _ = (e.err_message(), e.to_string());
                return;
            }
        }
    }
}

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "PUB ",
            "HPUB ",
            "SUB ",
            "UNSUB ",
            "PING",
            "PONG",
            "CONNECT ",
            "INFO ",
            "MSG ",
            "HMSG ",
            "+OK",
            "-ERR ",
            "\r\n",
            "\n",
            "\r",
            " ",
            "\t",
            "foo",
            "a.b",
            "*",
            ">",
            "0",
            "1",
            "2",
            "12",
            "99999",
            "{}",
            "{\"headers\":true}",
            "NATS/1.0\r\n\r\n",
            "'",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic_on_random_bytes(input in prop::collection::vec(any::<u8>(), 0..256)) {
        let small = Limits { max_control_line: 16, max_payload: 32 };
        for limits in [Limits::default(), small] {
            drive(&input, &limits, decode_client_op);
            drive(&input, &limits, decode_server_op);
        }
    }

    #[test]
    fn decoders_never_panic_on_protocol_shaped_bytes(parts in prop::collection::vec(fragment(), 0..24)) {
        let input: Vec<u8> = parts.concat();
        let small = Limits { max_control_line: 16, max_payload: 32 };
        for limits in [Limits::default(), small] {
            drive(&input, &limits, decode_client_op);
            drive(&input, &limits, decode_server_op);
        }
    }
}
