//! rskafka 0.6.0 versus edge-bridge's WireProducer against one Tansu: 200-byte records, no
//! compression, acks=all, one partition, batches of 10, 100 and 1000, one batch in flight.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_bridge::producer::{Compression, KafkaProducer, ProduceRecord, ProducerConfig, WireProducer};
use edge_tests::kafka::Tansu;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression as RsCompression, UnknownTopicHandling};
use rskafka::record::Record;

const SIZE: usize = 200;

fn value(i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x & 15) as usize]
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::var("EDGE_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    let client = ClientBuilder::new(vec![bootstrap.clone()]).build().await.expect("rskafka client");
    let controller = client.controller_client().expect("controller");
    let ours = WireProducer::new({
        let mut c = ProducerConfig::new(vec![bootstrap.clone()]);
        c.compression = Compression::None;
        c
    })
    .expect("producer");
    let pool: Vec<Vec<u8>> = (0..1024).map(value).collect();
    println!("rskafka 0.6.0 vs edge-bridge WireProducer, Tansu 0.6.0, {total} records of {SIZE} B, 1 partition, no compression");
    println!();
    println!("| batch | rskafka (rec/s) | ours (rec/s) | ours/rskafka | rskafka mean batch latency | ours mean batch latency |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (run, batch) in [10usize, 100, 1000].into_iter().enumerate() {
        let n = if batch == 10 { total / 10 } else { total };
        let topic_rs = format!("rs-{run}");
        controller.create_topic(&topic_rs, 1, 1, 5_000).await.expect("create");
        let pc = client
            .partition_client(topic_rs.clone(), 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            let records: Vec<Record> = (sent..sent + batch)
                .map(|i| Record {
                    key: None,
                    value: Some(pool[i % 1024].clone()),
                    headers: Default::default(),
                    timestamp: rskafka::chrono::DateTime::from_timestamp_millis(1_763_700_000_000).expect("timestamp"),
                })
                .collect();
            pc.produce(records, RsCompression::NoCompression).await.expect("rskafka produce");
            sent += batch;
        }
        let rs = start.elapsed();

        let topic_ours = format!("ours-{run}");
        ours.create_topic(&topic_ours, 1, 1).await.expect("create");
        let pool_b: Vec<Bytes> = pool.iter().map(|v| Bytes::from(v.clone())).collect();
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            let records: Vec<ProduceRecord> = (sent..sent + batch)
                .map(|i| ProduceRecord { key: None, value: Some(pool_b[i % 1024].clone()), edge: None, headers: Vec::new(), timestamp_ms: 1 })
                .collect();
            ours.produce(&edge_bridge::topition::Topition::new(topic_ours.as_str(), 0), &records).await.expect("our produce");
            sent += batch;
        }
        let us = start.elapsed();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let lat = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0 / (n / batch) as f64);
        println!(
            "| {batch} | {:.0} | {:.0} | {:.1} | {} | {} |",
            rate(rs),
            rate(us),
            rate(us) / rate(rs),
            lat(rs),
            lat(us)
        );
    }
}
