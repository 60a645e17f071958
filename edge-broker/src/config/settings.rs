//! What the broker's parts are built from: the log's, the producer's and the forwarder's
//! settings, the compiled routes, directories and login rules, derived from a valid config.

use super::*;

impl Config {
    /// Whether any NATS credential is configured (then anonymous is off unless asked for).
    pub fn nats_has_credentials(&self) -> bool {
        let n = &self.nats;
        n.token.is_some()
            || n.token_file.is_some()
            || !n.users.is_empty()
            || self.auth.password_file.is_some()
    }

    /// Whether MQTT clients without credentials are accepted: `mqtt.allow_anonymous`, or when
    /// unset, only without `auth.password_file`.
    pub fn mqtt_anonymous_allowed(&self) -> bool {
        self.mqtt
            .allow_anonymous
            .unwrap_or(self.auth.password_file.is_none())
    }

    /// Whether NATS clients without credentials are accepted: `nats.allow_anonymous`, or when
    /// unset, only when no credential is configured.
    pub fn nats_anonymous_allowed(&self) -> bool {
        self.nats
            .allow_anonymous
            .unwrap_or(!self.nats_has_credentials())
    }

    /// The producer's SASL settings, if `kafka.sasl_mechanism` is set.
    fn kafka_sasl_settings(&self) -> Option<edge_bridge::producer::sasl::SaslSettings> {
        let k = &self.kafka;
        let mechanism = k.sasl_mechanism.as_deref()?.parse().ok()?;
        let secret_file = if mechanism == edge_bridge::producer::sasl::Mechanism::OAuthBearer {
            k.sasl_token_file.clone()?
        } else {
            k.sasl_password_file.clone()?
        };
        Some(edge_bridge::producer::sasl::SaslSettings {
            mechanism,
            username: k.sasl_username.clone().unwrap_or_default(),
            secret_file,
        })
    }

    /// The producer's TLS settings, if `kafka.tls` is on.
    pub(super) fn kafka_tls_settings(&self) -> Option<edge_bridge::producer::tls::TlsSettings> {
        let k = &self.kafka;
        k.tls.then(|| edge_bridge::producer::tls::TlsSettings {
            ca: k.tls_ca.clone(),
            cert: k.tls_cert.clone(),
            key: k.tls_key.clone(),
        })
    }

    /// The Kafka producer settings of `[kafka]`.
    pub fn kafka_producer_config(&self) -> ProducerConfig {
        let k = &self.kafka;
        let mut config = ProducerConfig::new(k.brokers.clone());
        config.client_id = k
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edge-broker-{}", self.node.id));
        config.compression = k.compression.parse().unwrap_or_default();
        config.request_timeout = k.request_timeout.0;
        config.connect_timeout = k.request_timeout.0.min(Duration::from_secs(10));
        config.max_request_bytes =
            usize::try_from(k.max_request_bytes.bytes()).unwrap_or(usize::MAX);
        config.idempotent = k.idempotent;
        if self.exactly_once() {
            config.transactional_id = Some(self.transactional_id());
        }
        config.tls = self.kafka_tls_settings();
        config.sasl = self.kafka_sasl_settings();
        config
    }

    /// True with `[kafka] delivery = "exactly_once"`.
    pub fn exactly_once(&self) -> bool {
        self.kafka.delivery == "exactly_once"
    }

    /// The transactional.id of exactly-once delivery: `edge-bridge.<node.id>`.
    pub fn transactional_id(&self) -> String {
        format!("edge-bridge.{}", self.node.id)
    }

    /// The forwarder settings of `[kafka]`.
    pub fn forward_config(&self) -> ForwardConfig {
        let k = &self.kafka;
        let mut config = ForwardConfig::new(&self.node.id);
        config.linger = k.linger.0;
        config.max_batch_bytes = usize::try_from(k.max_batch_bytes.bytes()).unwrap_or(usize::MAX);
        config.max_batch_records = k.max_batch_records;
        config.max_request_bytes =
            usize::try_from(k.max_request_bytes.bytes()).unwrap_or(usize::MAX);
        config.backoff_min = k.retry_backoff_min.0;
        config.backoff_max = k.retry_backoff_max.0;
        config.auth_backoff_max = k.auth_retry_backoff_max.0;
        config.outage_log_interval = k.outage_log_interval.0;
        config.max_bytes_per_sec = k.max_bytes_per_sec.map(ByteSize::bytes);
        config.max_transaction_interval = k.max_transaction_interval.0;
        config.auto_create_partitions = k.auto_create_topics.then_some(k.auto_create_partitions);
        config.dead_letter = match k.dead_letter.as_deref() {
            None => DeadLetterSink::File(self.node.data_dir.join("dead-letter")),
            Some(dl) => match dl.strip_prefix("kafka:") {
                Some(topic) => DeadLetterSink::Topic(topic.to_owned()),
                None => DeadLetterSink::File(self.node.data_dir.join(dl)),
            },
        };
        config
    }

    /// The compiled `[[route]]` entries.
    pub fn compile_routes(&self) -> Result<Routes, ConfigError> {
        Routes::compile(&self.route_configs())
            .map_err(|error| ConfigError::Route { error, path: None })
    }

    /// The `[[route]]` entries as the route module takes them.
    pub(super) fn route_configs(&self) -> Vec<RouteConfig> {
        self.routes
            .iter()
            .map(RouteSection::to_route_config)
            .collect()
    }

    /// Directory of the MQTT server's state (sessions, retained messages).
    pub fn mqtt_state_dir(&self) -> PathBuf {
        self.node.data_dir.join("mqtt")
    }

    /// Directory of the event log inside the data directory.
    pub fn log_dir(&self) -> PathBuf {
        self.node.data_dir.join("log")
    }

    /// The edge-log configuration this file describes.
    pub fn log_config(&self) -> LogConfig {
        let mut config = LogConfig::new(self.log_dir());
        config.segment_bytes = self.log.segment_bytes.bytes();
        config.max_bytes = self.log.max_bytes.bytes();
        // validate() keeps this below segment_bytes / 2, far below u32::MAX for sane segments.
        config.max_record_bytes =
            u32::try_from(self.log.max_record_bytes.bytes()).unwrap_or(u32::MAX);
        config.fsync = self.log.fsync;
        config.when_full = self.log.when_full;
        config.preallocate = self.log.preallocate;
        config.sector_writes = self.log.sector_writes;
        config
    }
}
