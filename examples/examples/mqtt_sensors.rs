//! MQTT sensor simulator in Rust: many devices publishing readings to edge-broker.
//!
//! Each device is its own MQTT 3.1.1 connection (client id `sim-rs-<n>`) publishing a small
//! JSON reading to `sensors/dev-<n>/<kind>` at `--rate` messages per second. With QoS 1/2 the
//! broker acknowledges only once the event is in its durable log, so "acked" counts safe events.
//!
//! ```sh
//! cargo run -p edge-examples --example mqtt_sensors -- --port 1883 --devices 20 --rate 5 --qos 1
//! ```
//! Stops after `--count` messages per device (0 = run until Ctrl-C) and prints the totals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// Command line of the simulator.
#[derive(Parser, Debug)]
#[command(about = "MQTT sensor simulator for edge-broker")]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Simulated devices (one connection each).
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Messages per second per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// QoS of every publish: 0, 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Messages per device; 0 = until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// Totals shared by all devices.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    acked: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be greater than 0");
    let qos = match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let mut devices = Vec::new();
    for n in 0..args.devices {
        devices.push(tokio::spawn(device(
            n,
            args.host.clone(),
            args.port,
            qos,
            Duration::from_secs_f64(1.0 / args.rate),
            args.count,
            stats.clone(),
            stop.clone(),
        )));
    }
    // Ctrl-C stops the devices; a line of totals every second meanwhile.
    let reporter = {
        let (stats, stop) = (stats.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => println!(
                        "mqtt_sensors: sent {}, acked {}",
                        stats.sent.load(Ordering::Relaxed),
                        stats.acked.load(Ordering::Relaxed)
                    ),
                    _ = tokio::signal::ctrl_c() => stop.cancel(),
                    () = stop.cancelled() => break,
                }
            }
        })
    };
    for task in devices {
        task.await.context("device task panicked")??;
    }
    stop.cancel();
    reporter.await.context("reporter task panicked")?;
    println!(
        "mqtt_sensors: done: sent {}, acked {}",
        stats.sent.load(Ordering::Relaxed),
        stats.acked.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One device: its own connection; publishes every `period` until `count` or `stop`.
#[allow(clippy::too_many_arguments)]
async fn device(
    n: u32,
    host: String,
    port: u16,
    qos: QoS,
    period: Duration,
    count: u64,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("sim-rs-{n}"), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    // 10 requests may wait in the client's queue: a slow broker slows the device down.
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    // The event loop does the network I/O in its own task (its poll() must not be cancelled
    // mid-packet). PUBACK (QoS 1) / PUBCOMP (QoS 2) = the event is in the broker's log.
    let acked = Arc::new(AtomicU64::new(0));
    let io = {
        let (acked, stats, stop) = (acked.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    () = stop.cancelled() => return Ok(()),
                };
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => anyhow::bail!("device {n}: connection failed: {err}"),
                }
            }
        })
    };
    let kind = if n.is_multiple_of(2) {
        "temperature"
    } else {
        "humidity"
    };
    let topic = format!("sensors/dev-{n:03}/{kind}");
    let mut tick = tokio::time::interval(period);
    let mut seq = 0u64;
    while (count == 0 || seq < count) && !io.is_finished() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let value = 20.0 + f64::from((n * 7) % 50) / 10.0 + (seq % 10) as f64 / 10.0;
        let payload =
            format!(r#"{{"device":"dev-{n:03}","seq":{seq},"value":{value:.1},"ts":{ts:.3}}}"#);
        client.publish(&topic, qos, false, payload).await?;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    // Wait (up to 5 s) for the last acknowledgements, then leave cleanly: no will message.
    if qos != QoS::AtMostOnce {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acked.load(Ordering::Relaxed) < seq
            && tokio::time::Instant::now() < deadline
            && !io.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    client.disconnect().await.ok();
    match tokio::time::timeout(Duration::from_secs(2), io).await {
        Ok(joined) => joined.context("event loop task panicked")?,
        Err(_) => Ok(()), // DISCONNECT not seen in time: the process exits anyway
    }
}
