//! The configuration's schema: every section, its keys and built-in defaults (what the TOML
//! file may say; [`super::check`] says which combinations make sense).

use super::check::validate_node_id;
use super::*;

/// Default depth limit of subscription filters (MQTT levels, NATS tokens): far beyond any real
/// topic tree, far below what a client could send in one packet.
pub const DEFAULT_MAX_TOPIC_LEVELS: usize = 128;

/// Default `max_pending_connections` of MQTT and NATS: connections that have not logged in.
pub const DEFAULT_MAX_PENDING: usize = 128;

/// Default `max_pending_per_source`: what one address may hold of [`DEFAULT_MAX_PENDING`].
pub const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 64;

/// Default `mqtt.park_idle_after`: long enough that a client publishing every second or
/// more often is never parked and resumed between its messages.
pub const DEFAULT_PARK_IDLE_AFTER: Duration = Duration::from_secs(5);
/// Default `socket_unsent_limit` of `[mqtt]` and `[nats]`: ~17.6 KiB held per subscriber that
/// stopped reading; a subscriber that keeps up loses at most ~9% at the median, within noise
/// (BENCHMARKS.md, "Kernel send buffers").
pub const DEFAULT_SOCKET_UNSENT_LIMIT: u64 = 16 << 10;
/// Default `socket_receive_buffer` of `[mqtt]` and `[nats]`: `net.ipv4.tcp_rmem`'s default,
/// what every socket starts with, made the most it may grow to (BENCHMARKS.md, "Kernel
/// receive buffers").
pub const DEFAULT_SOCKET_RECEIVE_BUFFER: u64 = 128 << 10;
/// Default `max_partial_packet_bytes_total` of `[mqtt]` and `[nats]`: eight packets of the
/// largest default size arriving at once.
pub const DEFAULT_MAX_PARTIAL_PACKET_BYTES_TOTAL: u64 = 8 << 20;
/// Default `mqtt.slow_subscriber_wait` (see BENCHMARKS.md, "QoS 0 to a slower subscriber").
pub const DEFAULT_SLOW_SUBSCRIBER_WAIT: Duration = Duration::from_secs(2);

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`: identity and data directory.
    pub node: NodeConfig,
    /// `[log]`: the durable event log.
    pub log: LogSection,
    /// `[mqtt]`: the MQTT listener and its limits.
    pub mqtt: MqttSection,
    /// `[nats]`: the NATS listener, authentication and durable-ack settings.
    pub nats: NatsSection,
    /// `[metrics]`: the Prometheus and health endpoint.
    pub metrics: MetricsSection,
    /// `[kafka]`: the upstream Kafka cluster and how the log is forwarded to it.
    pub kafka: KafkaSection,
    /// `[auth]`: users and topic permissions shared by MQTT and NATS.
    pub auth: AuthSection,
    /// `[[route]]`: which published topics are stored and forwarded to which Kafka topic.
    #[serde(rename = "route")]
    pub routes: Vec<RouteSection>,
}

/// One `[[route]]`: an MQTT topic filter or NATS subject pattern → a Kafka topic and key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// MQTT topic filter (`sensors/+/temperature`); exclusive with `nats`.
    pub mqtt: Option<String>,
    /// NATS subject pattern (`sensors.*.humidity`); exclusive with `mqtt`.
    pub nats: Option<String>,
    /// Destination Kafka topic (required; a missing one is reported by validation, with the
    /// route's other problems).
    #[serde(default)]
    pub kafka_topic: String,
    /// Key template: `{topic.N}`, `{client_id}`, `{node.id}` and literal text; none = null key.
    pub key: Option<String>,
    /// Fixed partition instead of hashing the key.
    pub partition: Option<i32>,
}

impl RouteSection {
    pub(super) fn to_route_config(&self) -> RouteConfig {
        RouteConfig {
            mqtt: self.mqtt.clone(),
            nats: self.nats.clone(),
            kafka_topic: self.kafka_topic.clone(),
            key: self.key.clone(),
            partition: self.partition,
        }
    }
}

/// `[mqtt]`: the MQTT 3.1.1/5 listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Serve MQTT at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    #[serde(deserialize_with = "units::listen::<1883, _>")]
    pub listen: SocketAddr,
    /// Address of a second listener speaking MQTT over TLS (usually port 8883); unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8883, _>")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain (server certificate first) for `tls_listen` and `ws_tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, TLS clients must present a certificate they issued.
    pub tls_client_ca: Option<PathBuf>,
    /// Address of a listener speaking MQTT over WebSockets (browsers, Node-RED; usually port
    /// 8083); unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8083, _>")]
    pub ws_listen: Option<SocketAddr>,
    /// Address of a listener speaking MQTT over WebSockets over TLS (`wss://`, usually port
    /// 8084) with the certificate of `tls_cert`; unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8084, _>")]
    pub ws_tls_listen: Option<SocketAddr>,
    /// The HTTP path the WebSocket listeners accept (`/mqtt`, what MQTT.js and Mosquitto's
    /// clients use); other paths get 404.
    pub ws_path: String,
    /// Most simultaneous client connections that logged in (TCP, TLS and WebSocket listeners together); more are
    /// refused with "server busy".
    pub max_connections: usize,
    /// Most connections that have not logged in yet (their own count: they never take the
    /// seats of `max_connections`); more are closed at once.
    pub max_pending_connections: usize,
    /// Most connections from one source address (IPv4, IPv6 /64) that have not logged in yet.
    pub max_pending_per_source: usize,
    /// Most connections from one source address, logged in or not (0: no limit).
    pub max_connections_per_source: usize,
    /// Largest CONNECT accepted before login (far below `max_packet_size`: a connection that
    /// has not logged in holds at most this much); `max_packet_size` if that is smaller.
    pub max_connect_size: ByteSize,
    /// Largest packet accepted from a client (advertised as Maximum Packet Size).
    pub max_packet_size: ByteSize,
    /// Bytes of packets larger than one read (8 KiB) that all clients together may be
    /// sending at once, or have sent for a log that has not written them yet: each is charged
    /// its whole size as soon as its header is in, and a packet that does not fit closes its
    /// connection (MQTT 5: DISCONNECT 0x97 Quota exceeded) to be sent again later. Bounds what
    /// clients that stop in the middle of a large packet, or a full log, make the broker hold.
    /// At least `max_packet_size`.
    pub max_partial_packet_bytes_total: ByteSize,
    /// QoS 1/2 publishes a client may have unacknowledged (advertised as Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session for a slow or offline client; more are dropped and counted.
    pub max_queued_messages: usize,
    /// Bytes one session may hold for its client, queued and in flight together (each
    /// delivery charged its topic, payload and 256 bytes of bookkeeping); more are dropped
    /// and counted (Mosquitto's option).
    pub max_queued_bytes: ByteSize,
    /// Bytes all sessions together may hold queued and in flight (the memory budget of
    /// deliveries); more are dropped and counted.
    pub max_queued_bytes_total: ByteSize,
    /// Bytes the kernel may hold unsent for each client socket (`TCP_NOTSENT_LOWAT`): what a
    /// subscriber that stopped reading makes the broker hold in kernel memory, charged to the
    /// unit's cgroup. Without it the kernel's autotuning grows a send buffer to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB) per connection. Bytes in flight to a client that
    /// reads are not limited. `"0B"`: no limit. Set on the listeners: changed by a restart,
    /// not a reload.
    pub socket_unsent_limit: ByteSize,
    /// The kernel's receive buffer of each client socket (`SO_RCVBUF`, as `ss` shows it: the
    /// kernel is asked for half, and doubles it for its bookkeeping): what a client's bytes
    /// hold in kernel memory while the broker does not read them (before login, paused,
    /// busy), charged to the unit's cgroup. Without it (`"0B"`) the kernel's autotuning grows
    /// the buffer of a fast publisher towards `net.ipv4.tcp_rmem`'s maximum (6 MiB by default)
    /// per connection. Set on the listeners: changed by a restart, not a reload.
    pub socket_receive_buffer: ByteSize,
    /// QoS 1/2 deliveries in flight towards a client at once (fewer if the client's Receive
    /// Maximum says so; 3.1.1 clients have none). Mosquitto's option.
    pub max_inflight_messages: u16,
    /// How long after a subscriber last made room in its full queue a publishing connection
    /// may still stop reading to wait for more, before the QoS 0 delivery is dropped and
    /// counted (`"0s"`: dropped at once; see `mqtt::pace`).
    pub slow_subscriber_wait: HumanDuration,
    /// Longest keep alive an MQTT 5 client may choose (`"0s"` = no limit): a longer one, or
    /// none, is lowered to it and announced as Server Keep Alive. MQTT 3.1.1 has no way to
    /// tell a client, so its keep alive stands (as Mosquitto 2 does). Mosquitto's option.
    pub max_keepalive: HumanDuration,
    /// The first spelling of `max_keepalive`, still accepted with a deprecation warning.
    pub max_keep_alive: Option<HumanDuration>,
    /// Longest session expiry a client may ask for; 3.1.1 persistent sessions get this.
    pub max_session_expiry: HumanDuration,
    /// Topic aliases accepted per connection (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Accept clients without credentials. Unset: only when `auth.password_file` is not set
    /// (as Mosquitto 2 with a password file). A TLS client with a verified certificate is
    /// never anonymous.
    pub allow_anonymous: Option<bool>,
    /// With mutual TLS, the certificate's CN (or first DNS/e-mail/URI SAN) is the user name
    /// and the CONNECT user name and password are not used (Mosquitto's option).
    pub use_identity_as_username: bool,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: HumanDuration,
    /// A logged-in plain TCP connection with nothing to do for this long is parked: it gives
    /// up its task, timer and reactor registration (about half of an idle client's memory)
    /// and is resumed when its socket has bytes, a delivery is queued for it, it is taken
    /// over, its keep alive expires or the broker stops. One whose client has sent nothing
    /// since its CONNECT parks as soon as it has nothing to do. `"0s"`: never parked (see
    /// `mqtt::park`).
    pub park_idle_after: HumanDuration,
    /// Most retained topics kept; a retained message on a new topic beyond it is refused
    /// (MQTT 5 QoS 1/2: PUBACK/PUBREC 0x97; otherwise delivered without being retained).
    pub max_retained: usize,
    /// Most bytes of all retained messages together (topic, payload and properties), refused
    /// like `max_retained`.
    pub max_retained_bytes: ByteSize,
    /// Most persistent sessions (Session Expiry above zero; 3.1.1: clean session off),
    /// connected or waiting offline; a new one beyond it is refused (CONNACK 0x97 Quota
    /// exceeded; 3.1.1: 0x03 Server unavailable). Clean sessions end with their connection
    /// and are bounded by `max_connections` instead.
    pub max_sessions: usize,
    /// Most subscriptions of one client; more get SUBACK 0x97 (3.1.1: 0x80).
    pub max_subscriptions_per_client: usize,
    /// Most memory one client's subscriptions may take, charged as each filter's text plus
    /// 1 KiB per level (what a level takes in the subscription tree); refused like
    /// `max_subscriptions_per_client`.
    pub max_subscription_bytes_per_client: ByteSize,
    /// Longest client identifier accepted (bytes; at least the 23 MQTT requires); longer ones
    /// are refused (CONNACK 0x85 Client Identifier not valid; 3.1.1: 0x02).
    pub max_client_id_length: usize,
    /// Most levels in a topic filter a client may subscribe to; deeper ones are refused
    /// (SUBACK "Topic Filter invalid").
    pub max_topic_levels: usize,
    /// How often the `$SYS` topics are published (Mosquitto's name; `"0s"`: never).
    pub sys_interval: HumanDuration,
}

/// What the kernel may hold for each client socket of one protocol: set on its listeners,
/// inherited by every connection they accept (so changed by a restart, not a reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// `socket_unsent_limit`: unsent bytes, 0 for no limit.
    pub unsent_limit: ByteSize,
    /// Its full name, as messages name it (`"mqtt.socket_unsent_limit"`).
    pub unsent_limit_field: &'static str,
    /// `socket_receive_buffer`: the receive buffer, 0 for the kernel's autotuning.
    pub receive_buffer: ByteSize,
    /// Its full name (`"mqtt.socket_receive_buffer"`).
    pub receive_buffer_field: &'static str,
}

impl MqttSection {
    /// The kernel's share of every client socket (`socket_unsent_limit`,
    /// `socket_receive_buffer`).
    pub fn socket_buffers(&self) -> SocketBuffers {
        SocketBuffers {
            unsent_limit: self.socket_unsent_limit,
            unsent_limit_field: "mqtt.socket_unsent_limit",
            receive_buffer: self.socket_receive_buffer,
            receive_buffer_field: "mqtt.socket_receive_buffer",
        }
    }

    /// The CONNECT size accepted before login: `max_connect_size`, or `max_packet_size` if
    /// that is smaller.
    pub fn connect_size_limit(&self) -> u64 {
        self.max_connect_size
            .bytes()
            .min(self.max_packet_size.bytes())
    }

    /// Applies deprecated spellings where the current key is not set.
    pub(super) fn resolve_deprecated(&mut self) {
        if let Some(old) = self.max_keep_alive
            && self.max_keepalive.0.is_zero()
        {
            self.max_keepalive = old;
        }
    }
}

/// Keys written with a deprecated spelling, each with what to write instead (`check` prints
/// them with its warnings; the broker logs them at start).
pub fn deprecations(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    if config.mqtt.max_keep_alive.is_some() {
        found.push(
            "mqtt.max_keep_alive is deprecated: write max_keepalive (Mosquitto's name for it)"
                .to_owned(),
        );
    }
    found
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ws_listen: None,
            ws_tls_listen: None,
            ws_path: "/mqtt".to_owned(),
            max_connections: 500,
            max_pending_connections: DEFAULT_MAX_PENDING,
            max_pending_per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
            max_connections_per_source: 0,
            max_connect_size: ByteSize(64 << 10),
            max_packet_size: ByteSize(1 << 20),
            max_partial_packet_bytes_total: ByteSize(DEFAULT_MAX_PARTIAL_PACKET_BYTES_TOTAL),
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_bytes: ByteSize(1 << 20),
            max_queued_bytes_total: ByteSize(32 << 20),
            socket_unsent_limit: ByteSize(DEFAULT_SOCKET_UNSENT_LIMIT),
            socket_receive_buffer: ByteSize(DEFAULT_SOCKET_RECEIVE_BUFFER),
            max_inflight_messages: 100,
            slow_subscriber_wait: HumanDuration(DEFAULT_SLOW_SUBSCRIBER_WAIT),
            max_keepalive: HumanDuration(Duration::ZERO),
            max_keep_alive: None,
            max_session_expiry: HumanDuration(Duration::from_secs(7 * 86_400)),
            topic_alias_maximum: 16,
            allow_anonymous: None,
            use_identity_as_username: false,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            park_idle_after: HumanDuration(DEFAULT_PARK_IDLE_AFTER),
            max_retained: 10_000,
            max_retained_bytes: ByteSize(16 << 20),
            max_sessions: 1000,
            max_subscriptions_per_client: 100,
            max_subscription_bytes_per_client: ByteSize(32 << 10),
            max_client_id_length: 128,
            max_topic_levels: DEFAULT_MAX_TOPIC_LEVELS,
            sys_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// `[kafka]`: the upstream Kafka cluster and the forwarder's batching, retries and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Forward the log to Kafka at all (needs at least one `[[route]]`).
    pub enabled: bool,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id sent to Kafka; default `edge-broker-<node.id>`.
    pub client_id: Option<String>,
    /// Record-batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long a chunk that caught up with the log waits for more records (a backlog never waits).
    pub linger: HumanDuration,
    /// Most log bytes per forwarded chunk.
    pub max_batch_bytes: ByteSize,
    /// Most records per forwarded chunk.
    pub max_batch_records: usize,
    /// Largest produce request (one partition's batch); a single record above it is
    /// dead-lettered.
    pub max_request_bytes: ByteSize,
    /// How long to wait for any Kafka response.
    pub request_timeout: HumanDuration,
    /// First retry delay after an upstream error.
    pub retry_backoff_min: HumanDuration,
    /// Longest retry delay.
    pub retry_backoff_max: HumanDuration,
    /// Longest retry delay while the cluster refuses us (credentials, certificates, ACLs).
    pub auth_retry_backoff_max: HumanDuration,
    /// While the uplink is down, how often a summary line is logged.
    pub outage_log_interval: HumanDuration,
    /// Upload cap in bytes per second for metered uplinks (unset: as fast as Kafka accepts).
    pub max_bytes_per_sec: Option<ByteSize>,
    /// Idempotent producer (producer id + sequence numbers).
    pub idempotent: bool,
    /// `at_least_once` (the default: any Kafka-compatible broker) or `exactly_once` (Kafka
    /// transactions with the position inside them; consumers read with
    /// `isolation.level=read_committed`).
    pub delivery: String,
    /// Exactly-once: how long Kafka lets a transaction stay open before aborting it.
    pub transaction_timeout: HumanDuration,
    /// Exactly-once: the longest a transaction stays open while records keep coming (it is
    /// stretched past 100 ms only when a commit costs more than a tenth of that); bounds the
    /// delay a read_committed consumer sees.
    pub max_transaction_interval: HumanDuration,
    /// Where records Kafka refuses for good go: a file path (default `<data_dir>/dead-letter`)
    /// or `kafka:<topic>`.
    pub dead_letter: Option<String>,
    /// Create missing Kafka topics (with `auto_create_partitions` partitions).
    pub auto_create_topics: bool,
    /// Partitions of topics the forwarder creates.
    pub auto_create_partitions: i32,
    /// Connect to the brokers over TLS (Kafka's `SSL` security protocol).
    pub tls: bool,
    /// PEM CA certificates trusted for the brokers; default the system bundle.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// SASL authentication to the brokers: `plain`, `scram-sha-256`, `scram-sha-512` or
    /// `oauthbearer`; unset: none. Over TLS when `tls = true`, else in plain TCP.
    pub sasl_mechanism: Option<String>,
    /// SASL user name (`plain`, `scram-*`).
    pub sasl_username: Option<String>,
    /// File holding the SASL password (`plain`, `scram-*`); read at every (re)connection, so a
    /// changed password is picked up without a restart.
    pub sasl_password_file: Option<PathBuf>,
    /// File holding the OAUTHBEARER token (a JWT); read again before the token expires.
    pub sasl_token_file: Option<PathBuf>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            enabled: true,
            brokers: vec!["127.0.0.1:9092".to_owned()],
            client_id: None,
            compression: "lz4".to_owned(),
            linger: HumanDuration(Duration::from_millis(5)),
            max_batch_bytes: ByteSize(1 << 20),
            max_batch_records: 10_000,
            max_request_bytes: ByteSize(1 << 20),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            retry_backoff_min: HumanDuration(Duration::from_millis(100)),
            retry_backoff_max: HumanDuration(Duration::from_secs(5)),
            auth_retry_backoff_max: HumanDuration(Duration::from_secs(60)),
            outage_log_interval: HumanDuration(Duration::from_secs(60)),
            max_bytes_per_sec: None,
            idempotent: true,
            delivery: "at_least_once".to_owned(),
            transaction_timeout: HumanDuration(Duration::from_secs(60)),
            max_transaction_interval: HumanDuration(Duration::from_secs(1)),
            dead_letter: None,
            auto_create_topics: false,
            auto_create_partitions: 1,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_token_file: None,
        }
    }
}

/// One `[[nats.users]]` entry: a user name and its password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsUser {
    /// User name the client sends in CONNECT `user`.
    pub user: String,
    /// Password the client sends in CONNECT `pass` (or `password_file`).
    pub password: Option<String>,
    /// File holding the password (systemd credentials: `$CREDENTIALS_DIRECTORY/NAME`).
    pub password_file: Option<PathBuf>,
}

/// `[nats]`: the NATS client-protocol listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// Serve NATS at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    #[serde(deserialize_with = "units::listen::<4222, _>")]
    pub listen: SocketAddr,
    /// Most simultaneous client connections that logged in (sent CONNECT); more get
    /// `-ERR 'maximum connections exceeded'`.
    pub max_connections: usize,
    /// Most connections that have not sent CONNECT yet (their own count); more are closed.
    pub max_pending_connections: usize,
    /// Most connections from one source address (IPv4, IPv6 /64) without CONNECT yet.
    pub max_pending_per_source: usize,
    /// Most connections from one source address, logged in or not (0: no limit).
    pub max_connections_per_source: usize,
    /// Largest PUB/HPUB payload (headers included), announced in INFO as `max_payload`.
    pub max_payload: ByteSize,
    /// Bytes of PUB/HPUB ops larger than one read (64 KiB) that all clients together may be
    /// sending at once, or have sent for a log that has not written them yet: each is charged
    /// its whole size as soon as its control line is in, and an op that does not fit closes
    /// its connection (without `-ERR`, so that clients reconnect) to be sent again later.
    /// Bounds what clients that stop in the middle of a large payload, or a full log, make the
    /// broker hold. At least `max_payload` and a control line (4 KiB).
    pub max_partial_packet_bytes_total: ByteSize,
    /// Output a client may have waiting; a subscriber further behind is a slow consumer and is
    /// disconnected with `-ERR 'Slow Consumer'`.
    pub max_pending: ByteSize,
    /// Output all connections together may have waiting; a message beyond it is dropped for
    /// that subscriber and counted (the memory budget of NATS deliveries).
    pub max_pending_total: ByteSize,
    /// Bytes the kernel may hold unsent for each client socket (`TCP_NOTSENT_LOWAT`): what a
    /// subscriber that stopped reading makes the broker hold in kernel memory, charged to the
    /// unit's cgroup. Without it the kernel's autotuning grows a send buffer to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB) per connection. Bytes in flight to a client that
    /// reads are not limited. `"0B"`: no limit. Set on the listeners: changed by a restart,
    /// not a reload.
    pub socket_unsent_limit: ByteSize,
    /// The kernel's receive buffer of each client socket (`SO_RCVBUF`, as `ss` shows it: the
    /// kernel is asked for half, and doubles it for its bookkeeping): what a client's bytes
    /// hold in kernel memory while the broker does not read them (before login, paused,
    /// busy), charged to the unit's cgroup. Without it (`"0B"`) the kernel's autotuning grows
    /// the buffer of a fast publisher towards `net.ipv4.tcp_rmem`'s maximum (6 MiB by default)
    /// per connection. Set on the listeners: changed by a restart, not a reload.
    pub socket_receive_buffer: ByteSize,
    /// Routed publishes a connection may have waiting for their durable ack; reading pauses beyond.
    pub max_inflight: usize,
    /// Most subscriptions per connection; more get `-ERR 'maximum subscriptions exceeded'`.
    pub max_subscriptions: usize,
    /// Most tokens in a subscription subject; deeper ones get `-ERR 'Invalid Subject'`.
    pub max_subject_tokens: usize,
    /// How often the server PINGs a client.
    pub ping_interval: HumanDuration,
    /// Unanswered PINGs after which the connection is stale and closed.
    pub max_pings_out: u32,
    /// Time a new connection has to send CONNECT (`-ERR 'Authentication Timeout'`).
    pub auth_timeout: HumanDuration,
    /// Token clients may authenticate with (CONNECT `auth_token`); ACL user `$token`.
    pub token: Option<String>,
    /// File holding the token (instead of `token`).
    pub token_file: Option<PathBuf>,
    /// Users clients may authenticate as (CONNECT `user`/`pass`), besides `auth.password_file`.
    pub users: Vec<NatsUser>,
    /// Accept clients that present no credentials. Unset: only when no credential is
    /// configured (`token`, `token_file`, `users`, `auth.password_file`).
    pub allow_anonymous: Option<bool>,
    /// How long a `Nats-Msg-Id` is remembered for duplicate detection of durable publishes.
    pub duplicate_window: HumanDuration,
    /// Most message ids remembered (oldest forgotten first), bounding the window's memory.
    pub max_duplicate_ids: usize,
    /// PEM certificate chain: when set (with `tls_key`), every client must use TLS (INFO
    /// `tls_required`, the client upgrades after INFO, as with nats-server's `tls {}`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate they issued.
    pub tls_client_ca: Option<PathBuf>,
}

impl NatsSection {
    /// The kernel's share of every client socket (`socket_unsent_limit`,
    /// `socket_receive_buffer`).
    pub fn socket_buffers(&self) -> SocketBuffers {
        SocketBuffers {
            unsent_limit: self.socket_unsent_limit,
            unsent_limit_field: "nats.socket_unsent_limit",
            receive_buffer: self.socket_receive_buffer,
            receive_buffer_field: "nats.socket_receive_buffer",
        }
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            max_connections: 500,
            max_pending_connections: DEFAULT_MAX_PENDING,
            max_pending_per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
            max_connections_per_source: 0,
            max_payload: ByteSize(1 << 20),
            max_partial_packet_bytes_total: ByteSize(DEFAULT_MAX_PARTIAL_PACKET_BYTES_TOTAL),
            max_pending: ByteSize(8 << 20),
            max_pending_total: ByteSize(8 << 20),
            socket_unsent_limit: ByteSize(DEFAULT_SOCKET_UNSENT_LIMIT),
            socket_receive_buffer: ByteSize(DEFAULT_SOCKET_RECEIVE_BUFFER),
            max_inflight: 4096,
            max_subscriptions: 10_000,
            max_subject_tokens: DEFAULT_MAX_TOPIC_LEVELS,
            ping_interval: HumanDuration(Duration::from_secs(120)),
            max_pings_out: 2,
            auth_timeout: HumanDuration(Duration::from_secs(2)),
            token: None,
            token_file: None,
            users: Vec::new(),
            allow_anonymous: None,
            duplicate_window: HumanDuration(Duration::from_secs(120)),
            max_duplicate_ids: 100_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// `[metrics]`: where `GET /metrics` and `GET /healthz` are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    #[serde(deserialize_with = "units::listen::<9100, _>")]
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

/// `[auth]`: users and topic permissions, shared by MQTT and NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Mosquitto's password file (`user:$7$...`, `$6$`); `edge-broker passwd FILE USER`
    /// writes it. Reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Mosquitto's ACL file (`topic`, `user`, `pattern` lines). Without it every
    /// authenticated client may publish and subscribe anywhere. Reloaded on SIGHUP.
    pub acl_file: Option<PathBuf>,
    /// Longest delay of a failed login's answer (it doubles per failure from 100 ms).
    pub max_login_delay: HumanDuration,
    /// Most source addresses whose failed logins are remembered.
    pub max_tracked_sources: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            password_file: None,
            acl_file: None,
            max_login_delay: HumanDuration(Duration::from_secs(2)),
            max_tracked_sources: 4096,
        }
    }
}

/// `[node]`: who this gateway is and where it keeps its data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Gateway id carried by every record forwarded upstream (`edge-node` header).
    pub id: String,
    /// Directory for the log, cursors and other state.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            data_dir: PathBuf::from("./edge-data"),
        }
    }
}

/// The machine's hostname when it makes a valid node id, else `edge-broker`.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| validate_node_id(name).is_ok())
        .unwrap_or_else(|| "edge-broker".to_owned())
}

/// `[log]`: segment size, disk budget and durability policy of edge-log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A new segment file is started once the current one passes this size.
    pub segment_bytes: ByteSize,
    /// Hard disk budget for all segments.
    pub max_bytes: ByteSize,
    /// Largest single record accepted (frame included).
    pub max_record_bytes: ByteSize,
    /// When a device is told its event is stored: `always`, `interval:<dur>` or `never`.
    #[serde(deserialize_with = "deserialize_fsync")]
    pub fsync: FsyncPolicy,
    /// What an append does when the budget is used up: `block`, `drop_oldest` or `reject`.
    #[serde(deserialize_with = "deserialize_when_full")]
    pub when_full: WhenFull,
    /// Keep the active segment zero-filled 1 MiB ahead of the writer while syncs are small, so
    /// an fdatasync has no file-system metadata (no journal write) to commit: faster syncs,
    /// fewer bytes reach the flash. On by default; it writes nothing on copy-on-write file
    /// systems, which the log recognises.
    pub preallocate: bool,
    /// Write new log bytes as whole 512-byte sectors (O_DIRECT) instead of rewriting the 4 KiB
    /// page holding the end at every sync: fewer bytes reach the flash at low rates. With an
    /// `interval:` fsync, an interval's events are written together by its sync.
    pub sector_writes: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            segment_bytes: ByteSize(64 << 20),
            max_bytes: ByteSize(2 << 30),
            max_record_bytes: ByteSize(1 << 20),
            fsync: FsyncPolicy::Always,
            when_full: WhenFull::Block,
            preallocate: true,
            sector_writes: false,
        }
    }
}

/// Parses the `log.fsync` setting.
pub fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text.trim() {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        other => match other.strip_prefix("interval:") {
            Some(interval) => {
                let interval = parse_duration(interval)?;
                if interval.is_zero() {
                    return Err("interval must be greater than zero (use \"always\")".to_owned());
                }
                Ok(FsyncPolicy::Interval(interval))
            }
            None => Err(format!(
                "invalid fsync policy {other:?}: expected \"always\", \"interval:<duration>\" (e.g. \"interval:100ms\") or \"never\""
            )),
        },
    }
}

/// Parses the `log.when_full` setting.
pub fn parse_when_full(text: &str) -> Result<WhenFull, String> {
    match text.trim() {
        "block" => Ok(WhenFull::Block),
        "drop_oldest" => Ok(WhenFull::DropOldest),
        "reject" => Ok(WhenFull::Reject),
        other => Err(format!(
            "invalid when_full policy {other:?}: expected \"block\", \"drop_oldest\" or \"reject\""
        )),
    }
}

fn deserialize_fsync<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
    parse_fsync(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn deserialize_when_full<'de, D: Deserializer<'de>>(d: D) -> Result<WhenFull, D::Error> {
    parse_when_full(&String::deserialize(d)?).map_err(de::Error::custom)
}
