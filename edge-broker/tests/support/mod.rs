//! In-process harness for the connection state machines: the real MQTT and NATS servers on an
//! edge-log over `MemStorage` (edge-log's in-memory fake), clients over `tokio::io::duplex`
//! speaking through edge-proto's codecs (the same ones the server uses, from the other side).

// Test code: unwrap/expect are fine (clippy.toml intent); not every test uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edge_broker::config::Config;
use edge_broker::hub::Hub;
use edge_broker::mqtt::MqttServer;
use edge_broker::nats::NatsServer;
use edge_broker::route::RouteTable;
use edge_log::testing::MemStorage;
use edge_log::{FsyncPolicy, Log, LogConfig, Record, Storage, WhenFull};
use edge_proto::mqtt::{
    self, ConnAck, Connect, MqttString, Packet, Properties, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions,
};
use edge_proto::nats::{Limits, ServerOp, decode_server_op};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to conclude that something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A small log: 1 KiB segments, 4 KiB budget, records up to 512 bytes, fsync always.
pub fn small_log(when_full: WhenFull) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_bytes: 4096,
        fsync: FsyncPolicy::Always,
        when_full,
        max_record_bytes: 512,
        ..LogConfig::new("/data/log")
    }
}

/// A log with room for every test that does not fill it.
pub fn roomy_log() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        max_bytes: 8 << 20,
        ..small_log(WhenFull::Block)
    }
}

/// The MQTT and NATS servers of one broker, without listeners.
pub struct Broker {
    pub log: Log,
    pub hub: Arc<Hub>,
    pub mqtt: Arc<MqttServer>,
    pub nats: Arc<NatsServer>,
    pub shutdown: CancellationToken,
    pub config: Config,
    _state: tempfile::TempDir,
}

impl Broker {
    /// A broker configured by `toml` (sections and `[[route]]`s) on `log` over `MemStorage`.
    pub fn start(toml: &str, log: LogConfig) -> Broker {
        Broker::start_on(toml, log, MemStorage::new())
    }

    /// The same on any storage (a `FaultyStorage` for failures).
    pub fn start_on(toml: &str, log: LogConfig, storage: Arc<dyn Storage>) -> Broker {
        let config = Config::parse(toml, Path::new("test.toml")).expect("test config");
        let (log, _) = Log::open_with_storage(log, storage).expect("open the log");
        let routes = RouteTable::new(config.compile_routes().unwrap(), "test-gw");
        let hub = Arc::new(Hub::new());
        let state = tempfile::tempdir().unwrap();
        let auth = edge_broker::auth::Auth::new(&config, None).expect("test auth");
        let mqtt = MqttServer::open(
            config.mqtt.clone(),
            Arc::clone(&hub),
            log.clone(),
            Arc::clone(&routes),
            state.path().to_owned(),
            Arc::clone(&auth),
        );
        let nats = NatsServer::new(
            config.nats.clone(),
            Arc::clone(&hub),
            log.clone(),
            routes,
            "test-gw",
            auth,
        );
        let shutdown = CancellationToken::new();
        // What `MqttServer::serve` does beside its accept loops: the MQTT connections leave
        // when `shutdown` is cancelled. (Tests without a runtime serve no connection.)
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mqtt, shutdown) = (Arc::clone(&mqtt), shutdown.clone());
            runtime.spawn(async move { mqtt.stop_connections_on(&shutdown).await });
        }
        Broker {
            log,
            hub,
            mqtt,
            nats,
            shutdown,
            config,
            _state: state,
        }
    }

    fn pipe(&self, buffer: usize) -> (DuplexStream, (ReadHalf, WriteHalf)) {
        let (client, server) = tokio::io::duplex(buffer);
        let (reader, writer) = tokio::io::split(server);
        (client, (Box::new(reader), Box::new(writer)))
    }

    /// A new MQTT connection served by `edge_broker::mqtt::connection::serve`.
    pub fn mqtt_client(&self, version: ProtocolVersion) -> MqttClient {
        self.mqtt_client_buffered(version, 64 << 10)
    }

    /// The same with a `buffer`-byte pipe in each direction.
    pub fn mqtt_client_buffered(&self, version: ProtocolVersion, buffer: usize) -> MqttClient {
        let (client, serve) = self.mqtt_serve(buffer);
        tokio::spawn(serve);
        MqttClient {
            io: client,
            inbuf: BytesMut::new(),
            version,
        }
    }

    /// Bytes of a logged-in MQTT connection's task future (`connection::serve` logs in, then
    /// spawns the packet loop): a task holds this much, inline, for the connection's life.
    pub fn mqtt_serve_future_bytes(&self) -> usize {
        edge_broker::mqtt::connection::serve_loop_future_bytes()
    }

    /// Bytes of an MQTT connection's login task future (`connection::serve`, never polled),
    /// held until CONNACK.
    pub fn mqtt_login_future_bytes(&self) -> usize {
        std::mem::size_of_val(&self.mqtt_serve(64).1)
    }

    /// The same for a NATS connection (`connection::serve_stream`).
    pub fn nats_serve_future_bytes(&self) -> usize {
        std::mem::size_of_val(&self.nats_serve(64).1)
    }

    /// A new MQTT connection over a `buffer`-byte pipe: the client's end and the server's
    /// `connection::serve` future (not yet spawned).
    fn mqtt_serve(&self, buffer: usize) -> (DuplexStream, impl Future<Output = ()> + use<>) {
        let (client, server) = tokio::io::duplex(buffer);
        let pending = self.mqtt.admission.arrive(peer().ip()).unwrap();
        let serve = edge_broker::mqtt::connection::serve(
            Arc::clone(&self.mqtt),
            Box::new(server),
            peer(),
            pending,
            self.shutdown.clone(),
            None,
        );
        (client, serve)
    }

    /// The same for NATS (`connection::serve_stream`).
    fn nats_serve(&self, buffer: usize) -> (DuplexStream, impl Future<Output = ()> + use<>) {
        let (client, halves) = self.pipe(buffer);
        let pending = self.nats.admission.arrive(peer().ip()).unwrap();
        let serve = edge_broker::nats::connection::serve_stream(
            Arc::clone(&self.nats),
            halves,
            peer(),
            pending,
            self.shutdown.clone(),
        );
        (client, serve)
    }

    /// A new NATS connection served by `edge_broker::nats::connection::serve_stream`.
    pub fn nats_client(&self) -> NatsClient {
        self.nats_client_buffered(64 << 10)
    }

    /// The same with a `buffer`-byte pipe in each direction.
    pub fn nats_client_buffered(&self, buffer: usize) -> NatsClient {
        let (client, serve) = self.nats_serve(buffer);
        tokio::spawn(serve);
        NatsClient {
            io: client,
            inbuf: BytesMut::new(),
        }
    }

    /// Every durable record in the log, read by a throw-away cursor.
    pub fn records(&self) -> Vec<Record> {
        let mut cursor = self.log.cursor("test-check").unwrap();
        let records = cursor.try_read(usize::MAX, usize::MAX).unwrap();
        drop(cursor);
        self.log.remove_cursor("test-check").unwrap();
        records
    }
}

type ReadHalf = edge_broker::listener::ReadHalf;
type WriteHalf = edge_broker::listener::WriteHalf;

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// An MQTT client on edge-proto's codec.
pub struct MqttClient {
    io: DuplexStream,
    inbuf: BytesMut,
    pub version: ProtocolVersion,
}

impl MqttClient {
    /// Sends packets in one write.
    pub async fn send_all(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            mqtt::encode(packet, self.version, &mut out).unwrap();
        }
        self.io.write_all(&out).await.unwrap();
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: Packet) {
        self.send_all(&[packet]).await;
    }

    /// Sends raw bytes (part of a packet, say); false if the server closed the connection.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok()
    }

    /// The next packet from the server within `within`; `None` if none came.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(packet) = mqtt::decode(&mut self.inbuf, self.version, u32::MAX).unwrap() {
                return Some(packet);
            }
            let read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.inbuf)).await;
            match read {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("the server closed the connection"),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => panic!("read failed: {err}"),
            }
        }
    }

    /// The next packet (panics after [`WAIT`]).
    pub async fn recv(&mut self) -> Packet {
        self.recv_within(WAIT)
            .await
            .expect("a packet from the server")
    }

    /// Asserts nothing comes for [`QUIET`].
    pub async fn expect_silence(&mut self, why: &str) {
        if let Some(packet) = self.recv_within(QUIET).await {
            panic!("{why}: got {packet:?}");
        }
    }

    /// Reads until the server closes; the packets it sent before.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                while let Some(p) = mqtt::decode(&mut self.inbuf, self.version, u32::MAX).unwrap() {
                    packets.push(p);
                }
                match self.io.read_buf(&mut self.inbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close: {packets:?}");
        packets
    }

    /// CONNECT with `client_id` and `keep_alive`; returns the CONNACK.
    pub async fn connect_with(&mut self, connect: Connect) -> ConnAck {
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A clean CONNECT as `client_id`.
    pub async fn connect(&mut self, client_id: &str) -> ConnAck {
        let connect = self.connect_packet(client_id);
        self.connect_with(connect).await
    }

    /// A clean CONNECT packet for this client's version.
    pub fn connect_packet(&self, client_id: &str) -> Connect {
        Connect {
            protocol_version: self.version,
            clean_start: true,
            keep_alive: 0,
            client_id: MqttString::try_from(client_id).unwrap(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    /// SUBSCRIBE to one filter; returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, packet_id: u16) -> SubAck {
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: MqttString::try_from(filter).unwrap(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Properties::default(),
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(ack) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// A PUBLISH packet.
pub fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: MqttString::try_from(topic).unwrap(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// A NATS client on edge-proto's codec (client side: it decodes server ops).
pub struct NatsClient {
    io: DuplexStream,
    inbuf: BytesMut,
}

impl NatsClient {
    /// Sends raw protocol text.
    pub async fn send(&mut self, text: &[u8]) {
        self.io.write_all(text).await.unwrap();
    }

    /// The next op from the server within `within`; `None` if none came.
    pub async fn recv_within(&mut self, within: Duration) -> Option<ServerOp> {
        let deadline = tokio::time::Instant::now() + within;
        let limits = Limits {
            max_payload: 1 << 20,
            ..Limits::default()
        };
        loop {
            if let Some(op) = decode_server_op(&mut self.inbuf, &limits).unwrap() {
                return Some(op);
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.inbuf)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("the server closed the connection"),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => panic!("read failed: {err}"),
            }
        }
    }

    /// The next op (panics after [`WAIT`]).
    pub async fn recv(&mut self) -> ServerOp {
        self.recv_within(WAIT).await.expect("an op from the server")
    }

    /// Asserts nothing comes for [`QUIET`].
    pub async fn expect_silence(&mut self, why: &str) {
        if let Some(op) = self.recv_within(QUIET).await {
            panic!("{why}: got {op:?}");
        }
    }

    /// Reads INFO, sends CONNECT (headers on, verbose off) and waits for the PONG of a PING.
    pub async fn connect(&mut self) {
        assert!(matches!(self.recv().await, ServerOp::Info(_)));
        self.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n")
            .await;
        assert!(matches!(self.recv().await, ServerOp::Pong));
    }

    /// Ops until the server closes the connection (panics after [`WAIT`]).
    pub async fn until_closed(&mut self) -> Vec<ServerOp> {
        let limits = Limits::default();
        let mut ops = Vec::new();
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                while let Ok(Some(op)) = decode_server_op(&mut self.inbuf, &limits) {
                    ops.push(op);
                }
                match self.io.read_buf(&mut self.inbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close: {ops:?}");
        ops
    }
}
