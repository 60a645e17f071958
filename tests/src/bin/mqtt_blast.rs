//! A fast MQTT 3.1.1 QoS 1 load generator for the Kafka bridge benchmark (the Rust twin of
//! `tests/tools/mqtt_blast.py`, which tops out at 40–60k msg/s per process).
//!
//! `mqtt-blast HOST PORT COUNT [--size 200] [--window 5000] [--keys 16] [--prefix p0]
//! [--client-id blast] [--connections 1]`
//!
//! Each of `--connections` connections (one writer and one reader thread each) publishes its
//! share of COUNT QoS 1 messages to `sensors/<prefix>c<i>-<n % keys>/t`, payload
//! `msg-<n> ` + random hex filler (about 2:1 compressible, like sensor JSON), at most
//! `--window` unacknowledged. Prints `{"records": N, "seconds": S, "rate": R}` once every
//! PUBACK arrived. The same binary feeds edge-broker and the naive pipeline (mosquitto).

// A benchmark tool fails loudly: a panic with a message is its error report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

struct Args {
    host: String,
    port: u16,
    count: u64,
    size: usize,
    window: u64,
    keys: u64,
    prefix: String,
    client_id: String,
    connections: u64,
}

fn parse() -> Args {
    let mut pos = Vec::new();
    let mut a = Args {
        host: String::new(),
        port: 0,
        count: 0,
        size: 200,
        window: 5000,
        keys: 16,
        prefix: "p0".into(),
        client_id: "blast".into(),
        connections: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => a.size = val().parse().expect("--size"),
            "--window" => a.window = val().parse().expect("--window"),
            "--keys" => a.keys = val().parse().expect("--keys"),
            "--prefix" => a.prefix = val(),
            "--client-id" => a.client_id = val(),
            "--connections" => a.connections = val().parse().expect("--connections"),
            _ => pos.push(arg),
        }
    }
    assert!(
        pos.len() == 3,
        "usage: mqtt-blast HOST PORT COUNT [options]"
    );
    a.host = pos[0].clone();
    a.port = pos[1].parse().expect("PORT");
    a.count = pos[2].parse().expect("COUNT");
    assert!(
        a.window > 0 && a.window < 65535,
        "--window must be 1..65534"
    );
    a
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// 1024 random hex tails (xorshift; same shape as the Python generator's).
fn pool(size: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1024)
        .map(|_| {
            (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"0123456789abcdef"[(x & 15) as usize]
                })
                .collect()
        })
        .collect()
}

/// One connection publishing `count` messages; returns when all are acknowledged.
fn connection(a: &Args, index: u64, count: u64, pool: &[Vec<u8>]) {
    let mut s = TcpStream::connect((a.host.as_str(), a.port)).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    string(format!("{}-{index}", a.client_id).as_bytes(), &mut body);
    let mut out = vec![0x10];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(&body);
    s.write_all(&out).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).expect("CONNACK");
    assert!(ack[0] == 0x20 && ack[3] == 0, "CONNACK refused: {ack:?}");

    let topics: Vec<Vec<u8>> = (0..a.keys)
        .map(|k| format!("sensors/{}c{index}-{k}/t", a.prefix).into_bytes())
        .collect();
    let (credit_tx, credit_rx) = sync_channel::<u64>(4096);
    let mut reader = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        // Every packet the broker sends here is a 4-byte PUBACK.
        let mut buf = vec![0u8; 64 * 1024];
        let (mut pending, mut acked) = (0usize, 0u64);
        while acked < count {
            let n = reader.read(&mut buf).expect("reading PUBACKs");
            assert!(n > 0, "connection closed after {acked} acks");
            pending += n;
            let got = (pending / 4) as u64;
            pending %= 4;
            acked += got;
            if got > 0 {
                let _ = credit_tx.send(got);
            }
        }
    });
    let chunk = (a.window / 4).max(1);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut out = Vec::with_capacity(1 << 20);
    while sent < count {
        while let Ok(n) = credit_rx.try_recv() {
            acked += n;
        }
        while sent - acked >= a.window {
            acked += credit_rx.recv().expect("reader stopped");
        }
        let end = count.min(sent + chunk.min(a.window - (sent - acked)));
        out.clear();
        for n in sent..end {
            let topic = &topics[(n % a.keys) as usize];
            let head = format!("msg-{n} ");
            let tail = &pool[(n % 1024) as usize];
            let tail = &tail[..a.size.saturating_sub(head.len()).min(tail.len())];
            let len = 2 + topic.len() + 2 + head.len() + tail.len();
            out.push(0x32);
            remaining_length(len, &mut out);
            string(topic, &mut out);
            out.extend_from_slice(&((n % 65535 + 1) as u16).to_be_bytes());
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(tail);
        }
        s.write_all(&out).unwrap();
        sent = end;
    }
    reader.join().expect("reader");
    let _ = s.write_all(&[0xE0, 0]);
}

fn main() {
    let a = parse();
    let pool = pool(a.size);
    let per = a.count / a.connections;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..a.connections {
            let (a, pool) = (&a, &pool);
            scope.spawn(move || connection(a, i, per, pool));
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let records = per * a.connections;
    println!(
        "{{\"records\": {records}, \"seconds\": {seconds}, \"rate\": {}}}",
        records as f64 / seconds
    );
}
