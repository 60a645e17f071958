//! Validation: the relations between values that the schema alone cannot express. Every
//! problem is collected (`Findings`), each naming its field, so `check` reports them all at once.

use super::*;

/// `tls_listen` and `ws_tls_listen` need a certificate and key, the files need one of them,
/// and they must load.
fn validate_mqtt_tls(mqtt: &MqttSection) -> Result<(), (&'static str, String)> {
    let files = (&mqtt.tls_cert, &mqtt.tls_key, &mqtt.tls_client_ca);
    let listener = match (mqtt.tls_listen, mqtt.ws_tls_listen) {
        (Some(_), _) => Some("mqtt.tls_listen"),
        (None, Some(_)) => Some("mqtt.ws_tls_listen"),
        (None, None) => None,
    };
    match listener {
        None if files == (&None, &None, &None) => Ok(()),
        None => Err((
            "mqtt.tls_listen",
            "must be set when mqtt.tls_cert, mqtt.tls_key or mqtt.tls_client_ca is (the address of the TLS listener, e.g. \"0.0.0.0:8883\"; or mqtt.ws_tls_listen for WebSockets over TLS)".to_owned(),
        )),
        Some(field) if mqtt.tls_cert.is_none() => Err((
            "mqtt.tls_cert",
            format!("is needed by {field} (a PEM certificate chain)"),
        )),
        Some(_) => check_tls_files(TlsFields::MQTT, files),
    }
}

/// The WebSocket path is what a client's URL ends with: one absolute path, no query.
fn validate_ws_path(path: &str) -> Result<(), (&'static str, String)> {
    let valid = path.starts_with('/')
        && path.len() <= 256
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if valid {
        Ok(())
    } else {
        Err((
            "mqtt.ws_path",
            format!(
                "{path:?} must be an absolute URL path such as \"/mqtt\" (at most 256 printable ASCII characters, no query)"
            ),
        ))
    }
}

/// The config fields of one listener's TLS files, for error messages.
struct TlsFields {
    cert: &'static str,
    key: &'static str,
    client_ca: &'static str,
}

impl TlsFields {
    const MQTT: TlsFields = TlsFields {
        cert: "mqtt.tls_cert",
        key: "mqtt.tls_key",
        client_ca: "mqtt.tls_client_ca",
    };
    const NATS: TlsFields = TlsFields {
        cert: "nats.tls_cert",
        key: "nats.tls_key",
        client_ca: "nats.tls_client_ca",
    };
}

/// A certificate needs its key (and the other way round), a client CA needs both, and the
/// files must load; the error names the field of the file that does not.
fn check_tls_files(
    fields: TlsFields,
    (cert, key, client_ca): (&Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>),
) -> Result<(), (&'static str, String)> {
    match (cert, key) {
        (None, None) if client_ca.is_none() => Ok(()),
        (None, _) => Err((
            fields.cert,
            format!(
                "is needed by {}",
                if key.is_some() {
                    fields.key
                } else {
                    fields.client_ca
                }
            ),
        )),
        (Some(_), None) => Err((
            fields.key,
            format!("is needed by {} (its PEM private key)", fields.cert),
        )),
        (Some(cert), Some(key)) => match crate::tls::acceptor(cert, key, client_ca.as_deref()) {
            Ok(_) => Ok(()),
            Err(err @ crate::tls::TlsError::Key { .. }) => Err((fields.key, err.to_string())),
            Err(err @ crate::tls::TlsError::ClientCa { .. }) => {
                Err((fields.client_ca, err.to_string()))
            }
            Err(err) => Err((fields.cert, err.to_string())),
        },
    }
}

/// Node ids go into Kafka headers and file names: keep them short and unambiguous.
pub(super) fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "must be 1 to 128 characters, got {} characters",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{id:?} contains {bad:?}: use letters, digits, '-', '_' and '.' only"
        ));
    }
    Ok(())
}

/// Largest `mqtt.slow_subscriber_wait` accepted.
const MAX_SLOW_SUBSCRIBER_WAIT: Duration = Duration::from_secs(10);

/// Accepted `socket_unsent_limit` of `[mqtt]` and `[nats]` besides 0 (no limit): below 4 KiB
/// every write waits for the client, above 16 MiB it is no bound.
const SOCKET_UNSENT_LIMIT_RANGE: std::ops::RangeInclusive<u64> = (4 << 10)..=(16 << 20);

/// Accepted `socket_receive_buffer` besides 0 (autotuned): below 16 KiB a client sends in
/// slivers, above 64 MiB it is no bound.
const SOCKET_RECEIVE_BUFFER_RANGE: std::ops::RangeInclusive<u64> = (16 << 10)..=(64 << 20);

/// The kernel's share of a section's sockets, each field named if it is out of range.
fn check_socket_buffers(buffers: SocketBuffers, found: &mut Findings) {
    check_socket_buffer(
        buffers.unsent_limit_field,
        buffers.unsent_limit,
        SOCKET_UNSENT_LIMIT_RANGE,
        "no limit",
        found,
    );
    check_socket_buffer(
        buffers.receive_buffer_field,
        buffers.receive_buffer,
        SOCKET_RECEIVE_BUFFER_RANGE,
        "autotuned",
        found,
    );
}

/// One of [`SocketBuffers`]: `"0B"` (which means `zero`) or a size in `range`.
fn check_socket_buffer(
    field: &'static str,
    size: ByteSize,
    range: std::ops::RangeInclusive<u64>,
    zero: &str,
    found: &mut Findings,
) {
    if size.bytes() != 0 && !range.contains(&size.bytes()) {
        found.invalid(
            field,
            format!(
                "{size} must be \"0B\" ({zero}) or between {} and {}",
                ByteSize(*range.start()),
                ByteSize(*range.end())
            ),
        );
    }
}

/// Smallest segment we accept: smaller ones only multiply files and fsyncs.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// What validation found, collected so that `check` reports every problem at once.
#[derive(Debug, Default)]
struct Findings(Vec<ConfigError>);

impl Findings {
    /// `field` has a value that does not make sense (with the others).
    fn invalid(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(ConfigError::Invalid {
            path: None,
            field,
            message: message.into(),
        });
    }

    /// Records the problem of a check that returns `(field, message)`.
    fn check(&mut self, result: Result<(), (&'static str, String)>) {
        if let Err((field, message)) = result {
            self.invalid(field, message);
        }
    }
}

impl Config {
    /// Checks relations between values that the schema alone cannot express; the error holds
    /// every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut found = self.findings();
        match found.len() {
            0 => Ok(()),
            1 => Err(found.remove(0)),
            _ => Err(ConfigError::Problems {
                origin: PathBuf::from("(config)"),
                problems: found.iter().flat_map(ConfigError::problems).collect(),
            }),
        }
    }

    /// Every problem validation finds, section by section.
    pub(super) fn findings(&self) -> Vec<ConfigError> {
        let mut found = Findings::default();
        self.check_node_and_log(&mut found);
        self.check_mqtt(&mut found);
        self.check_nats(&mut found);
        if let Err(error) = self.validate_auth() {
            found.0.push(error);
        }
        found.0.extend(
            Routes::problems(&self.route_configs())
                .into_iter()
                .map(|error| ConfigError::Route { error, path: None }),
        );
        self.check_kafka(&mut found);
        found.0
    }

    fn check_node_and_log(&self, found: &mut Findings) {
        if let Err(message) = validate_node_id(&self.node.id) {
            found.invalid("node.id", message);
        }
        if self.node.data_dir.as_os_str().is_empty() {
            found.invalid("node.data_dir", "must not be empty");
        }
        let log = &self.log;
        if log.segment_bytes.bytes() < MIN_SEGMENT_BYTES {
            found.invalid(
                "log.segment_bytes",
                format!(
                    "{} is too small: at least {}",
                    log.segment_bytes,
                    ByteSize(MIN_SEGMENT_BYTES)
                ),
            );
        }
        if log.max_bytes.bytes() < log.segment_bytes.bytes().saturating_mul(2) {
            found.invalid(
                "log.max_bytes",
                format!(
                    "{} must be at least twice log.segment_bytes ({}) so one segment can be freed while another fills",
                    log.max_bytes, log.segment_bytes
                ),
            );
        }
        if log.max_record_bytes.bytes() == 0
            || log.max_record_bytes.bytes() > log.segment_bytes.bytes() / 2
        {
            found.invalid(
                "log.max_record_bytes",
                format!(
                    "{} must be between 1 byte and half of log.segment_bytes ({})",
                    log.max_record_bytes, log.segment_bytes
                ),
            );
        }
    }

    fn check_mqtt(&self, found: &mut Findings) {
        let mqtt = &self.mqtt;
        if mqtt.max_packet_size.bytes() < 64 || mqtt.max_packet_size.bytes() > 268_435_460 {
            found.invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} must be between 64B and 256MiB (the MQTT limit)",
                    mqtt.max_packet_size
                ),
            );
        }
        if mqtt.max_inflight == 0 {
            found.invalid("mqtt.max_inflight", "must be at least 1");
        }
        if mqtt.max_inflight_messages == 0 {
            found.invalid("mqtt.max_inflight_messages", "must be at least 1");
        }
        if mqtt.max_partial_packet_bytes_total < mqtt.max_packet_size {
            found.invalid(
                "mqtt.max_partial_packet_bytes_total",
                format!(
                    "{} must be at least mqtt.max_packet_size ({}): a packet of that size could never arrive",
                    mqtt.max_partial_packet_bytes_total, mqtt.max_packet_size
                ),
            );
        }
        if mqtt.max_queued_bytes > mqtt.max_queued_bytes_total {
            found.invalid(
                "mqtt.max_queued_bytes",
                format!(
                    "{} must be at most mqtt.max_queued_bytes_total ({})",
                    mqtt.max_queued_bytes, mqtt.max_queued_bytes_total
                ),
            );
        }
        for (field, value) in [
            ("mqtt.max_connections", mqtt.max_connections),
            ("mqtt.max_pending_connections", mqtt.max_pending_connections),
            ("mqtt.max_pending_per_source", mqtt.max_pending_per_source),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if mqtt.max_connect_size.bytes() < 64 {
            found.invalid(
                "mqtt.max_connect_size",
                format!("{} must be at least 64B", mqtt.max_connect_size),
            );
        }
        for (field, value) in [
            ("mqtt.max_keepalive", Some(mqtt.max_keepalive)),
            ("mqtt.max_keep_alive", mqtt.max_keep_alive),
        ] {
            if value.is_some_and(|v| v.0 > Duration::from_secs(u64::from(u16::MAX))) {
                found.invalid(field, "must be at most 65535s");
            }
        }
        if mqtt.max_session_expiry.0 > Duration::from_secs(u64::from(u32::MAX)) {
            found.invalid("mqtt.max_session_expiry", "must be at most 4294967295s");
        }
        if mqtt.max_topic_levels == 0 {
            found.invalid("mqtt.max_topic_levels", "must be at least 1");
        }
        for (field, value) in [
            ("mqtt.max_sessions", mqtt.max_sessions as u64),
            (
                "mqtt.max_subscriptions_per_client",
                mqtt.max_subscriptions_per_client as u64,
            ),
            (
                "mqtt.max_subscription_bytes_per_client",
                mqtt.max_subscription_bytes_per_client.bytes(),
            ),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if mqtt.max_client_id_length < 23 {
            found.invalid(
                "mqtt.max_client_id_length",
                "must be at least 23 (MQTT requires accepting client ids of 1 to 23 bytes)",
            );
        }
        if mqtt.connect_timeout.0.is_zero() {
            found.invalid("mqtt.connect_timeout", "must be greater than zero");
        }
        found.check(validate_mqtt_tls(mqtt));
        found.check(validate_ws_path(&mqtt.ws_path));
        check_socket_buffers(mqtt.socket_buffers(), found);
        if mqtt.slow_subscriber_wait.0 > MAX_SLOW_SUBSCRIBER_WAIT {
            found.invalid(
                "mqtt.slow_subscriber_wait",
                "must be at most 10s (a subscriber that never reads holds its publishers that long)",
            );
        }
        let sys = mqtt.sys_interval.0;
        if !sys.is_zero() && sys < Duration::from_secs(1) {
            found.invalid(
                "mqtt.sys_interval",
                "must be \"0s\" (no $SYS topics) or at least 1s",
            );
        }
    }

    fn check_nats(&self, found: &mut Findings) {
        let nats = &self.nats;
        if nats.max_subject_tokens == 0 {
            found.invalid("nats.max_subject_tokens", "must be at least 1");
        }
        check_socket_buffers(nats.socket_buffers(), found);
        found.check(check_tls_files(
            TlsFields::NATS,
            (&nats.tls_cert, &nats.tls_key, &nats.tls_client_ca),
        ));
        if nats.max_payload.bytes() == 0 || nats.max_payload.bytes() > 64 << 20 {
            found.invalid(
                "nats.max_payload",
                format!("{} must be between 1B and 64MiB", nats.max_payload),
            );
        }
        let largest_op =
            nats.max_payload.bytes() + edge_proto::nats::DEFAULT_MAX_CONTROL_LINE as u64;
        if nats.max_partial_packet_bytes_total.bytes() < largest_op {
            found.invalid(
                "nats.max_partial_packet_bytes_total",
                format!(
                    "{} must be at least nats.max_payload ({}) and a 4KiB control line: a PUB of that size could never arrive",
                    nats.max_partial_packet_bytes_total, nats.max_payload
                ),
            );
        }
        if nats.max_pending_total < nats.max_pending {
            found.invalid(
                "nats.max_pending_total",
                format!(
                    "{} must be at least nats.max_pending ({})",
                    nats.max_pending_total, nats.max_pending
                ),
            );
        }
        if nats.max_pending.bytes() < nats.max_payload.bytes() {
            found.invalid(
                "nats.max_pending",
                format!(
                    "{} must be at least nats.max_payload ({})",
                    nats.max_pending, nats.max_payload
                ),
            );
        }
        for (field, value) in [
            ("nats.max_connections", nats.max_connections),
            ("nats.max_pending_connections", nats.max_pending_connections),
            ("nats.max_pending_per_source", nats.max_pending_per_source),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if nats.max_inflight == 0 {
            found.invalid("nats.max_inflight", "must be at least 1");
        }
        if nats.ping_interval.0.is_zero() {
            found.invalid("nats.ping_interval", "must be greater than zero");
        }
        if nats.auth_timeout.0.is_zero() {
            found.invalid("nats.auth_timeout", "must be greater than zero");
        }
        if nats.max_duplicate_ids == 0 {
            found.invalid("nats.max_duplicate_ids", "must be at least 1");
        }
        if nats.token.as_deref() == Some("") {
            found.invalid("nats.token", "must not be empty");
        }
        if nats.token.is_some() && nats.token_file.is_some() {
            found.invalid(
                "nats.token_file",
                "give nats.token or nats.token_file, not both",
            );
        }
        if nats.users.iter().any(|u| u.user.is_empty()) {
            found.invalid("nats.users", "every user needs a non-empty name");
        }
        if let Some(i) = nats
            .users
            .iter()
            .position(|u| u.password.is_some() == u.password_file.is_some())
        {
            found.invalid(
                "nats.users",
                format!(
                    "nats.users[{}] needs exactly one of password and password_file",
                    i + 1
                ),
            );
        }
        if nats.allow_anonymous == Some(false) && !self.nats_has_credentials() {
            found.invalid(
                "nats.allow_anonymous",
                "false needs nats.token, nats.token_file, nats.users or auth.password_file, or no client could connect",
            );
        }
    }

    /// The auth files load, and the MQTT identity settings make sense.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| {
            Err(ConfigError::Invalid {
                path: None,
                field,
                message,
            })
        };
        if self.mqtt.use_identity_as_username && self.mqtt.tls_client_ca.is_none() {
            return invalid(
                "mqtt.use_identity_as_username",
                "needs mqtt.tls_client_ca (mutual TLS: the identity comes from the client certificate)"
                    .to_owned(),
            );
        }
        if self.auth.max_tracked_sources == 0 {
            return invalid("auth.max_tracked_sources", "must be at least 1".to_owned());
        }
        if self.auth.max_login_delay.0 > Duration::from_secs(60) {
            return invalid("auth.max_login_delay", "must be at most 60s".to_owned());
        }
        if let Some(path) = &self.auth.password_file
            && let Err(e) = crate::auth::password::PasswordFile::load(path)
        {
            return invalid("auth.password_file", e.to_string());
        }
        if let Some(path) = &self.auth.acl_file
            && let Err(e) = crate::auth::acl::Acl::load(path)
        {
            return invalid("auth.acl_file", e.to_string());
        }
        if let Some(path) = &self.nats.token_file
            && let Err(e) = crate::auth::secret::read(path)
        {
            return invalid("nats.token_file", e.to_string());
        }
        for user in &self.nats.users {
            if let Some(path) = &user.password_file
                && let Err(e) = crate::auth::secret::read(path)
            {
                return invalid("nats.users", e.to_string());
            }
        }
        Ok(())
    }

    /// `[kafka] sasl_*`: a known mechanism with what it needs.
    fn validate_kafka_sasl(&self) -> Result<(), (&'static str, String)> {
        let k = &self.kafka;
        let Some(name) = &k.sasl_mechanism else {
            return match (&k.sasl_username, &k.sasl_password_file, &k.sasl_token_file) {
                (None, None, None) => Ok(()),
                _ => Err((
                    "kafka.sasl_mechanism",
                    "must be set when kafka.sasl_username, sasl_password_file or sasl_token_file is"
                        .to_owned(),
                )),
            };
        };
        let mechanism: edge_bridge::producer::sasl::Mechanism =
            name.parse()
                .map_err(|e: edge_bridge::producer::sasl::UnknownMechanism| {
                    ("kafka.sasl_mechanism", e.to_string())
                })?;
        let (needed, file_field) =
            if mechanism == edge_bridge::producer::sasl::Mechanism::OAuthBearer {
                (&k.sasl_token_file, "kafka.sasl_token_file")
            } else {
                if k.sasl_username.as_deref().is_none_or(str::is_empty) {
                    return Err((
                        "kafka.sasl_username",
                        format!("is needed by sasl_mechanism = {name:?}"),
                    ));
                }
                (&k.sasl_password_file, "kafka.sasl_password_file")
            };
        let Some(path) = needed else {
            return Err((
                file_field,
                format!("is needed by sasl_mechanism = {name:?}"),
            ));
        };
        if k.enabled
            && let Err(e) = crate::auth::secret::read(path)
        {
            return Err((file_field, e.to_string()));
        }
        Ok(())
    }

    fn check_kafka(&self, found: &mut Findings) {
        let k = &self.kafka;
        if k.enabled && k.brokers.is_empty() {
            found.invalid("kafka.brokers", "must name at least one host:port");
        }
        for broker in &k.brokers {
            let port = broker
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p > 0) {
                found.invalid(
                    "kafka.brokers",
                    format!("{broker:?} is not host:port (e.g. \"kafka-1.example.net:9092\")"),
                );
            }
        }
        if let Err(e) = k.compression.parse::<Compression>() {
            found.invalid("kafka.compression", e.to_string());
        }
        match k.delivery.as_str() {
            "at_least_once" => {}
            "exactly_once" => {
                if !k.idempotent {
                    found.invalid(
                        "kafka.idempotent",
                        "must be true with kafka.delivery = \"exactly_once\"",
                    );
                }
                if k.dead_letter
                    .as_deref()
                    .is_some_and(|d| d.starts_with("kafka:"))
                {
                    found.invalid(
                        "kafka.dead_letter",
                        "a dead-letter topic is not supported with kafka.delivery = \"exactly_once\" yet; use a file",
                    );
                }
            }
            other => found.invalid(
                "kafka.delivery",
                format!("{other:?}: expected \"at_least_once\" or \"exactly_once\""),
            ),
        }
        if k.transaction_timeout.0 < Duration::from_secs(1)
            || k.transaction_timeout.0 > Duration::from_secs(15 * 60)
        {
            found.invalid(
                "kafka.transaction_timeout",
                "must be between 1s and 15m (Kafka's default transaction.max.timeout.ms)",
            );
        }
        if k.max_transaction_interval.0 < edge_bridge::forward::TXN_INTERVAL
            || k.max_transaction_interval.0 > Duration::from_secs(60)
            || k.max_transaction_interval.0 * 2 > k.transaction_timeout.0
        {
            found.invalid(
                "kafka.max_transaction_interval",
                "must be between 100ms and 60s, and at most half of kafka.transaction_timeout",
            );
        }
        if k.client_id.as_deref().is_some_and(str::is_empty) {
            found.invalid("kafka.client_id", "must not be empty");
        }
        if k.linger.0 > Duration::from_secs(10) {
            found.invalid("kafka.linger", "must be at most 10s");
        }
        if k.max_batch_records == 0 {
            found.invalid("kafka.max_batch_records", "must be at least 1");
        }
        if k.max_batch_bytes.bytes() < 1024 {
            found.invalid("kafka.max_batch_bytes", "must be at least 1KiB");
        }
        if k.max_request_bytes.bytes() < 1024 || k.max_request_bytes.bytes() > 1 << 30 {
            found.invalid("kafka.max_request_bytes", "must be between 1KiB and 1GiB");
        }
        if k.request_timeout.0 < Duration::from_millis(10) {
            found.invalid("kafka.request_timeout", "must be at least 10ms");
        }
        if k.retry_backoff_min.0.is_zero() {
            found.invalid("kafka.retry_backoff_min", "must be greater than zero");
        }
        // Each wait at least the one before it.
        for ((field, wait), (below, floor)) in [
            (
                ("kafka.retry_backoff_max", k.retry_backoff_max.0),
                ("kafka.retry_backoff_min", k.retry_backoff_min.0),
            ),
            (
                ("kafka.auth_retry_backoff_max", k.auth_retry_backoff_max.0),
                ("kafka.retry_backoff_max", k.retry_backoff_max.0),
            ),
        ] {
            if wait < floor {
                found.invalid(field, format!("{wait:?} is below {below} ({floor:?})"));
            }
        }
        if k.outage_log_interval.0 < Duration::from_secs(1) {
            found.invalid("kafka.outage_log_interval", "must be at least 1s");
        }
        if k.max_bytes_per_sec.is_some_and(|b| b.bytes() == 0) {
            found.invalid(
                "kafka.max_bytes_per_sec",
                "must be greater than zero (leave it out for no cap)",
            );
        }
        if k.auto_create_partitions < 1 {
            found.invalid("kafka.auto_create_partitions", "must be at least 1");
        }
        found.check(self.validate_kafka_tls());
        found.check(self.validate_kafka_sasl());
        if let Some(dl) = &k.dead_letter {
            match dl.strip_prefix("kafka:") {
                Some(topic) if topic.is_empty() || topic.len() > 249 => found.invalid(
                    "kafka.dead_letter",
                    "kafka:<topic> needs a topic name of 1 to 249 characters",
                ),
                None if dl.is_empty() => {
                    found.invalid("kafka.dead_letter", "must be a file path or kafka:<topic>")
                }
                _ => {}
            }
        }
    }

    /// TLS files need `kafka.tls = true`, a client certificate needs its key, and the files
    /// must load (checked only when forwarding is enabled).
    fn validate_kafka_tls(&self) -> Result<(), (&'static str, String)> {
        let k = &self.kafka;
        let files = [
            ("kafka.tls_ca", &k.tls_ca),
            ("kafka.tls_cert", &k.tls_cert),
            ("kafka.tls_key", &k.tls_key),
        ];
        if !k.tls {
            return match files.iter().find(|(_, f)| f.is_some()) {
                Some((field, _)) => Err(("kafka.tls", format!("must be true when {field} is set"))),
                None => Ok(()),
            };
        }
        match (&k.tls_cert, &k.tls_key) {
            (Some(_), None) => {
                return Err(("kafka.tls_key", "is needed by kafka.tls_cert".to_owned()));
            }
            (None, Some(_)) => {
                return Err(("kafka.tls_cert", "is needed by kafka.tls_key".to_owned()));
            }
            _ => {}
        }
        let Some(settings) = self.kafka_tls_settings().filter(|_| k.enabled) else {
            return Ok(());
        };
        edge_bridge::producer::tls::connector(&settings)
            .map(|_| ())
            .map_err(|err| {
                let message = err.to_string();
                let field = files
                    .iter()
                    .find(|(_, f)| {
                        f.as_ref()
                            .is_some_and(|p| message.contains(&*p.to_string_lossy()))
                    })
                    .map_or("kafka.tls_ca", |(field, _)| *field);
                (field, message)
            })
    }
}
