//! CPU cost per record of the forwarder's planning and encoding stages, single-threaded, on
//! chunks shaped like `tests/tools/bench_bridge.py`'s backlog (MQTT `sensors/p0c0-<n % 16>/t`,
//! 200-byte payloads, destination topic `bridge` keyed by the second level as the route
//! `sensors/+/t` with `{topic.2}` decides at ingest, 4 partitions, lz4). Prints a table; no
//! Kafka needed.
//!
//! `cargo bench -p edge-bridge --bench plan_encode` (`EDGE_BENCH_CHUNKS` chunks per run,
//! default 300).

// A benchmark harness: a failed setup must abort the run loudly.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use edge_bridge::plan::{NoRoutes, Planner};
use edge_bridge::producer::{Compression, EncodedBatch};
use edge_log::{Destination, Record, Source};

/// Records per chunk: what a 1 MiB chunk of the bench's records holds.
const CHUNK: usize = 4238;

fn chunk(start: u64) -> Vec<Record> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (start..start + CHUNK as u64)
        .map(|n| {
            let mut payload = format!("msg-{n} ").into_bytes();
            while payload.len() < 200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                payload.push(b"0123456789abcdef"[(x & 15) as usize]);
            }
            Record {
                offset: n,
                timestamp_ms: 1_700_000_000_000 + n / 100,
                source: Source::Mqtt,
                topic: format!("sensors/p0c0-{}/t", n % 16).into(),
                client_id: "p0c0".into(),
                destination: Some(Destination {
                    topic: "bridge".into(),
                    key: Some(Bytes::from(format!("p0c0-{}", n % 16))),
                    partition: None,
                }),
                headers: Vec::new(),
                payload: Bytes::from(payload),
            }
        })
        .collect()
}

fn main() {
    let chunks: usize = std::env::var("EDGE_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut planner = Planner::new(Arc::new(NoRoutes), "bench-gw");
    let counts = HashMap::from([("bridge".to_owned(), 4)]);
    let inputs: Vec<Vec<Record>> = (0..8).map(|i| chunk(i * CHUNK as u64)).collect();
    let mut scratch = BytesMut::new();
    let (mut plan_ns, mut encode_ns, mut drop_ns, mut bytes) = (0u128, 0u128, 0u128, 0usize);
    for i in 0..chunks {
        let records = &inputs[i % inputs.len()];
        let t = Instant::now();
        // As the forwarder does: the counts of the previous chunk's topics, no `topics` pass.
        let plan = planner.plan(records, &counts).expect("plan");
        plan_ns += t.elapsed().as_nanos();
        let t = Instant::now();
        let encoded: Vec<EncodedBatch> = plan
            .batches
            .iter()
            .map(|b| {
                EncodedBatch::encode(&b.records, Compression::Lz4, &mut scratch).expect("encode")
            })
            .collect();
        encode_ns += t.elapsed().as_nanos();
        bytes += encoded.iter().map(EncodedBatch::len).sum::<usize>();
        let t = Instant::now();
        drop(encoded);
        drop(plan);
        drop_ns += t.elapsed().as_nanos();
    }
    let n = (chunks * CHUNK) as f64;
    println!("{:<40} {:>10}", "stage (lz4, 4 partitions)", "ns/record");
    println!("{:<40} {:>10.1}", "plan", plan_ns as f64 / n);
    println!(
        "{:<40} {:>10.1}",
        "encode (record batch v2 + lz4)",
        encode_ns as f64 / n
    );
    println!("{:<40} {:>10.1}", "drop plan + batches", drop_ns as f64 / n);
    println!(
        "{:<40} {:>10.1}",
        "encoded bytes per record",
        bytes as f64 / n
    );
}
