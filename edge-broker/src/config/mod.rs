//! The TOML configuration: schema, built-in defaults, loading and validation.
//!
//! Every section rejects unknown keys, and every problem names the field it is about
//! (`log.fsync: ...`) and where it is set (its line, or the `EDGE_BROKER_*` variable), and all
//! of them are reported at once, so `edge-broker check` tells an operator exactly what to fix.
//!
//! - [`document`]: parsing that carries on past a bad key, overrides applied to the parsed
//!   tree, field locations.
//! - [`env`]: the `EDGE_BROKER_*` namespace: overrides versus process settings.
//! - [`summary`]: what `check` prints for a valid config.
//! - [`budget`]: the memory budget: every limit's worst case together against the unit's
//!   `MemoryMax`, and the warning when a config exceeds it.
//! - `schema`: every section, its keys and built-in defaults.
//! - `check`: validation across values (every problem found, each naming its field).
//! - `settings`: what the log, the Kafka producer and forwarder, the routes and the logins are
//!   built from.
//! - `units`: sizes, durations, listen addresses.

pub mod budget;
mod check;
pub mod document;
pub mod env;
mod schema;
mod settings;
pub mod summary;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::route::{RouteConfig, RouteError, Routes};
use document::Document;
use edge_bridge::dead_letter::DeadLetterSink;
use edge_bridge::forward::ForwardConfig;
use edge_bridge::producer::{Compression, ProducerConfig};
use edge_log::{FsyncPolicy, LogConfig, WhenFull};
use serde::{Deserialize, Deserializer, de};

pub use document::{Location, Problem};
pub use schema::*;
pub use units::{ByteSize, HumanDuration, parse_duration, parse_listen, parse_size};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The I/O error (not a `source`: the message already says it, once).
        error: std::io::Error,
    },
    /// Problems in the file and its environment overrides: every one found, in file order,
    /// each naming its field and where it is set.
    #[error("{}", describe_problems(origin, problems))]
    Problems {
        /// The file (or `(built-in defaults)`).
        origin: PathBuf,
        /// What is wrong, at least one.
        problems: Vec<Problem>,
    },
    /// An `EDGE_BROKER_*` environment override is malformed.
    #[error(transparent)]
    Environment(env::OverrideError),
    /// A `[[route]]` entry is invalid.
    #[error("{}{error}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Route {
        /// What is wrong with the route.
        error: RouteError,
        /// The file it came from, when known.
        path: Option<PathBuf>,
    },
    /// The values parse but do not make sense together.
    #[error("{}{field}: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid {
        /// The file the values came from, when known.
        path: Option<PathBuf>,
        /// Dotted path of the offending key.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// The dotted name of the field the error is about (the first one, when there are several).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(file)",
            ConfigError::Environment(e) => &e.variable,
            ConfigError::Problems { problems, .. } => {
                problems.first().map_or("(document)", |p| p.field.as_str())
            }
            ConfigError::Invalid { field, .. } => field,
            ConfigError::Route { error, .. } => route_error_field(error),
        }
    }

    /// Every problem, each with its field (an error that is not about fields has none).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Problems { problems, .. } => problems.clone(),
            ConfigError::Invalid { field, message, .. } => vec![Problem {
                field: (*field).to_owned(),
                message: message.clone(),
                at: None,
            }],
            ConfigError::Route { error, .. } => {
                let field = route_error_field(error).to_owned();
                let message = error.to_string();
                let message = message
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(&message)
                    .to_owned();
                vec![Problem {
                    field,
                    message,
                    at: None,
                }]
            }
            ConfigError::Read { .. } | ConfigError::Environment(_) => Vec::new(),
        }
    }
}

/// One problem on one line after the origin; several on lines of their own.
fn describe_problems(origin: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", origin.display()),
        many => {
            let mut text = format!("{}: {} problems:", origin.display(), many.len());
            for problem in many {
                text.push_str(&format!("\n  {problem}"));
            }
            text
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, path)
    }

    /// The effective config: the file (or the built-in defaults without one) with the
    /// `EDGE_BROKER_<SECTION>_<KEY>` overrides of the process environment applied.
    pub fn load_with_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => read(path)?,
            None => String::new(),
        };
        let origin = path.unwrap_or(Path::new("(built-in defaults)"));
        let found =
            env::scan(std::env::vars(), &env::section_names()).map_err(ConfigError::Environment)?;
        Config::parse_with(&text, origin, &found.overrides)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, origin, &[])
    }

    /// Parses config text, applies `overrides` and validates the result. The error holds every
    /// problem found, in file order, each with its line (or the variable that set it).
    pub fn parse_with(
        text: &str,
        origin: &Path,
        overrides: &[env::Override],
    ) -> Result<Config, ConfigError> {
        let problems = |problems| ConfigError::Problems {
            origin: origin.to_owned(),
            problems,
        };
        let document = Document::parse(text, overrides).map_err(problems)?;
        let (mut config, mut found) = document.deserialize::<Config>();
        if let Some(config) = &mut config
            && let Err((field, message)) = config.resolve_credential_paths()
        {
            found.push(Problem {
                field: field.to_owned(),
                message,
                at: document.locate(field),
            });
        }
        if let Some(config) = &mut config {
            config.mqtt.resolve_deprecated();
        }
        if let Some(config) = &config {
            // A key that did not parse was replaced by its default: leave out what validation
            // says about it (or because of it), which would only confuse.
            let reported: Vec<String> = found.iter().map(|p| p.field.clone()).collect();
            for problem in config.findings().iter().flat_map(ConfigError::problems) {
                if reported
                    .iter()
                    .any(|f| problem.field == *f || problem.message.contains(f.as_str()))
                {
                    continue;
                }
                found.push(Problem {
                    at: document.locate(&problem.field),
                    ..problem
                });
            }
        }
        match config {
            Some(config) if found.is_empty() => Ok(config),
            _ => {
                // File order; overrides after the file, then what is set nowhere.
                found.sort_by_key(|p| match &p.at {
                    Some(Location::Line { line, column }) => (0, *line, *column),
                    Some(Location::Variable(_)) => (1, 0, 0),
                    None => (2, 0, 0),
                });
                Err(problems(found))
            }
        }
    }

    /// Resolves `$CREDENTIALS_DIRECTORY/...` in every file path that may hold a secret.
    fn resolve_credential_paths(&mut self) -> Result<(), (&'static str, String)> {
        let resolve = |field: &'static str, path: &mut Option<PathBuf>| {
            if let Some(p) = path.as_mut() {
                *p = crate::auth::secret::resolve(p).map_err(|e| (field, e.to_string()))?;
            }
            Ok::<(), (&'static str, String)>(())
        };
        resolve("auth.password_file", &mut self.auth.password_file)?;
        resolve("auth.acl_file", &mut self.auth.acl_file)?;
        resolve("nats.token_file", &mut self.nats.token_file)?;
        for user in &mut self.nats.users {
            resolve("nats.users", &mut user.password_file)?;
        }
        resolve("mqtt.tls_key", &mut self.mqtt.tls_key)?;
        resolve("nats.tls_key", &mut self.nats.tls_key)?;
        resolve("kafka.tls_key", &mut self.kafka.tls_key)?;
        resolve(
            "kafka.sasl_password_file",
            &mut self.kafka.sasl_password_file,
        )?;
        resolve("kafka.sasl_token_file", &mut self.kafka.sasl_token_file)?;
        Ok(())
    }
}

/// The config path a route error is about (`route[2].key`).
fn route_error_field(err: &RouteError) -> &str {
    match err {
        RouteError::NoFilter { field }
        | RouteError::BothFilters { field }
        | RouteError::BadFilter { field, .. }
        | RouteError::BadKafkaTopic { field, .. }
        | RouteError::BadKey { field, .. }
        | RouteError::BadPartition { field, .. } => field,
    }
}

/// The text of a config file.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

/// How long `interval:` fsync may be before `check` warns that acknowledged events can be lost.
pub const LONG_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn kafka_tls_settings_name_the_field() {
        let cases = [
            ("tls_ca = \"ca.pem\"", "kafka.tls"),
            ("tls = true\ntls_cert = \"c.pem\"", "kafka.tls_key"),
            (
                "tls = true\ntls_ca = \"/nonexistent/ca.pem\"",
                "kafka.tls_ca",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[kafka]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
        let off = parse("[kafka]\nenabled = false\ntls = true\ntls_ca = \"/nonexistent/ca.pem\"\n");
        assert!(off.is_ok(), "files are not loaded while forwarding is off");
    }

    #[test]
    fn websocket_listeners_name_their_fields() {
        let ok = parse("[mqtt]\nws_listen = \"127.0.0.1:8083\"\n").unwrap();
        assert_eq!(
            ok.mqtt.ws_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8083)))
        );
        assert_eq!(ok.mqtt.ws_path, "/mqtt");
        let cases = [
            ("ws_tls_listen = \"127.0.0.1:8084\"", "mqtt.tls_cert"),
            ("ws_path = \"mqtt\"", "mqtt.ws_path"),
            ("ws_path = \"/mqtt?x=1\"", "mqtt.ws_path"),
            ("ws_tls_listen = \"127.0.0.1\"", "mqtt.ws_tls_listen"),
            ("sys_interval = \"100ms\"", "mqtt.sys_interval"),
            (
                "slow_subscriber_wait = \"11s\"",
                "mqtt.slow_subscriber_wait",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[mqtt]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
    }

    #[test]
    fn a_socket_buffer_out_of_range_is_named() {
        let ok = parse("[mqtt]\nsocket_unsent_limit = \"0B\"\nsocket_receive_buffer = \"0B\"\n")
            .unwrap();
        assert_eq!(ok.mqtt.socket_unsent_limit.bytes(), 0);
        assert_eq!(ok.mqtt.socket_receive_buffer.bytes(), 0);
        assert_eq!(
            ok.nats.socket_unsent_limit.bytes(),
            DEFAULT_SOCKET_UNSENT_LIMIT
        );
        assert_eq!(
            ok.nats.socket_receive_buffer.bytes(),
            DEFAULT_SOCKET_RECEIVE_BUFFER
        );
        for (body, field) in [
            (
                "[mqtt]\nsocket_unsent_limit = \"1KiB\"",
                "mqtt.socket_unsent_limit",
            ),
            (
                "[nats]\nsocket_unsent_limit = \"32MiB\"",
                "nats.socket_unsent_limit",
            ),
            (
                "[nats]\nsocket_unsent_limit = \"lots\"",
                "nats.socket_unsent_limit",
            ),
            (
                "[mqtt]\nsocket_receive_buffer = \"8KiB\"",
                "mqtt.socket_receive_buffer",
            ),
            (
                "[nats]\nsocket_receive_buffer = \"128MiB\"",
                "nats.socket_receive_buffer",
            ),
        ] {
            let err = parse(&format!("{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
    }

    /// The pool of large packets arriving must hold one packet of the largest size, or such
    /// a packet could never arrive.
    #[test]
    fn a_partial_packet_pool_smaller_than_one_packet_is_named() {
        let ok = parse(
            "[mqtt]\nmax_packet_size = \"64KiB\"\nmax_partial_packet_bytes_total = \"64KiB\"\n\
             [nats]\nmax_partial_packet_bytes_total = \"1028KiB\"\n",
        )
        .unwrap();
        assert_eq!(ok.mqtt.max_partial_packet_bytes_total.bytes(), 64 << 10);
        for (body, field, says) in [
            (
                "[mqtt]\nmax_partial_packet_bytes_total = \"512KiB\"",
                "mqtt.max_partial_packet_bytes_total",
                "must be at least mqtt.max_packet_size (1MiB)",
            ),
            (
                "[nats]\nmax_partial_packet_bytes_total = \"1MiB\"",
                "nats.max_partial_packet_bytes_total",
                "must be at least nats.max_payload (1MiB) and a 4KiB control line",
            ),
        ] {
            let err = parse(&format!("{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn tls_settings_come_as_a_set_and_a_bad_file_is_named() {
        let cases = [
            ("tls_cert = \"c.pem\"", "mqtt.tls_listen"),
            ("tls_client_ca = \"ca.pem\"", "mqtt.tls_listen"),
            ("tls_listen = \"127.0.0.1:8883\"", "mqtt.tls_cert"),
            (
                "tls_listen = \"127.0.0.1:8883\"\ntls_cert = \"c.pem\"",
                "mqtt.tls_key",
            ),
            (
                "tls_listen = \"127.0.0.1:8883\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k.pem\"",
                "mqtt.tls_cert",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[mqtt]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
        let err = parse(
            "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn empty_file_gives_the_built_in_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.node.data_dir, PathBuf::from("./edge-data"));
        assert_eq!(config.log.segment_bytes, ByteSize(64 << 20));
        assert_eq!(config.log.fsync, FsyncPolicy::Always);
        assert_eq!(config.log.when_full, WhenFull::Block);
        assert_eq!(config.metrics.listen, "127.0.0.1:9100".parse().unwrap());
    }

    #[test]
    fn sector_writes_reach_the_log_and_are_off_by_default() {
        assert!(!parse("").unwrap().log_config().sector_writes);
        let config = parse("[log]\nsector_writes = true\n").unwrap();
        assert!(config.log_config().sector_writes);
        let err = parse("[log]\nsector_writes = 1\n").unwrap_err();
        assert_eq!(err.field(), "log.sector_writes");
    }

    #[test]
    fn preallocate_reaches_the_log_and_is_on_by_default() {
        assert!(parse("").unwrap().log_config().preallocate);
        let config = parse("[log]\npreallocate = false\n").unwrap();
        assert!(!config.log_config().preallocate);
        let err = parse("[log]\npreallocate = \"yes\"\n").unwrap_err();
        assert_eq!(err.field(), "log.preallocate");
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let err = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(err.field(), "metrics.listen");
    }

    #[test]
    fn architecture_example_parses() {
        let config = parse(
            r#"
            [node]
            id = "gw-01"
            data_dir = "/var/lib/edge-broker"
            [log]
            segment_bytes = "64MiB"
            max_bytes = "2GiB"
            fsync = "interval:100ms"
            when_full = "drop_oldest"
            "#,
        )
        .unwrap();
        assert_eq!(config.node.id, "gw-01");
        assert_eq!(config.log.max_bytes, ByteSize(2 << 30));
        assert_eq!(
            config.log.fsync,
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(config.log.when_full, WhenFull::DropOldest);
        let log = config.log_config();
        assert_eq!(log.dir, PathBuf::from("/var/lib/edge-broker/log"));
        assert_eq!(log.segment_bytes, 64 << 20);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = parse("[log]\nsegment_byte = \"1MiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_byte");
        assert!(err.to_string().contains("segment_byte"), "{err}");
        let err = parse("[nodes]\nid = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("[log]\nfsync = \"sometimes\"\n").unwrap_err();
        assert_eq!(err.field(), "log.fsync");
        assert!(err.to_string().contains("sometimes"), "{err}");
        let err = parse("[log]\nsegment_bytes = \"64XB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_bytes");
        let err = parse("[log]\nwhen_full = \"wait\"\n").unwrap_err();
        assert_eq!(err.field(), "log.when_full");
        let err = parse("[node]\nid = \"gw 01\"\n").unwrap_err();
        assert_eq!(err.field(), "node.id");
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let err = parse("[log]\nsegment_bytes = \"64MiB\"\nmax_bytes = \"100MiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.max_bytes");
        let err = parse("[log]\nsegment_bytes = \"1KiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_bytes");
    }

    #[test]
    fn routes_parse_and_bad_routes_name_the_field() {
        let config = parse(
            "[[route]]\nmqtt = \"sensors/+/temperature\"\nkafka_topic = \"t\"\nkey = \"{topic.2}\"\n\
             [[route]]\nnats = \"sensors.*.humidity\"\nkafka_topic = \"h\"\n",
        )
        .unwrap();
        assert_eq!(config.compile_routes().unwrap().len(), 2);
        let err = parse("[[route]]\nmqtt = \"a/#/b\"\nkafka_topic = \"t\"\n").unwrap_err();
        assert_eq!(err.field(), "route[1].mqtt");
        let err =
            parse("[[route]]\nmqtt = \"a\"\nkafka_topic = \"t\"\nkey = \"{nope}\"\n").unwrap_err();
        assert_eq!(err.field(), "route[1].key");
        let err = parse("[[route]]\nmqtt = \"a\"\nkafka = \"t\"\n").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn kafka_section_parses_and_bad_values_name_the_field() {
        let config = parse(
            "[node]\nid = \"gw-01\"\ndata_dir = \"/d\"\n[kafka]\nbrokers = [\"k1:9092\", \"k2:9093\"]\n\
             compression = \"zstd\"\nlinger = \"20ms\"\nmax_batch_bytes = \"256KiB\"\n\
             max_bytes_per_sec = \"64KiB\"\ndead_letter = \"kafka:dlq\"\nauto_create_topics = true\n",
        )
        .unwrap();
        let p = config.kafka_producer_config();
        assert_eq!(p.brokers, vec!["k1:9092", "k2:9093"]);
        assert_eq!(p.client_id, "edge-broker-gw-01");
        assert_eq!(p.compression, Compression::Zstd);
        let f = config.forward_config();
        assert_eq!(f.linger, Duration::from_millis(20));
        assert_eq!(f.outage_log_interval, Duration::from_secs(60));
        assert_eq!(f.auth_backoff_max, Duration::from_secs(60));
        assert_eq!(f.max_batch_bytes, 256 << 10);
        assert_eq!(f.max_bytes_per_sec, Some(64 << 10));
        assert_eq!(f.auto_create_partitions, Some(1));
        assert_eq!(f.dead_letter, DeadLetterSink::Topic("dlq".into()));
        let d = parse("[node]\ndata_dir = \"/d\"\n")
            .unwrap()
            .forward_config();
        assert_eq!(d.dead_letter, DeadLetterSink::File("/d/dead-letter".into()));
        for (text, field) in [
            ("brokers = []", "kafka.brokers"),
            ("brokers = [\"nohost\"]", "kafka.brokers"),
            ("compression = \"brotli\"", "kafka.compression"),
            ("max_batch_records = 0", "kafka.max_batch_records"),
            (
                "retry_backoff_min = \"1s\"\nretry_backoff_max = \"10ms\"",
                "kafka.retry_backoff_max",
            ),
            (
                "retry_backoff_max = \"10s\"\nauth_retry_backoff_max = \"5s\"",
                "kafka.auth_retry_backoff_max",
            ),
            ("max_bytes_per_sec = 0", "kafka.max_bytes_per_sec"),
            (
                "outage_log_interval = \"10ms\"",
                "kafka.outage_log_interval",
            ),
            ("dead_letter = \"kafka:\"", "kafka.dead_letter"),
            ("lingerr = \"1ms\"", "kafka.lingerr"),
        ] {
            let err = parse(&format!("[kafka]\n{text}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{text}: {err}");
        }
    }

    #[test]
    fn nats_section_parses_and_bad_values_name_the_field() {
        let config = parse(
            "[nats]\nlisten = \"127.0.0.1:4333\"\nduplicate_window = \"30s\"\ntoken = \"s3cret\"\n\
             allow_anonymous = false\n[[nats.users]]\nuser = \"a\"\npassword = \"b\"\n",
        )
        .unwrap();
        assert_eq!(config.nats.listen, "127.0.0.1:4333".parse().unwrap());
        assert_eq!(config.nats.duplicate_window.0, Duration::from_secs(30));
        assert_eq!(config.nats.users.len(), 1);
        assert_eq!(
            parse("").unwrap().nats.listen,
            "127.0.0.1:4222".parse().unwrap()
        );
        let err = parse("[nats]\nallow_anonymous = false\n").unwrap_err();
        assert_eq!(err.field(), "nats.allow_anonymous");
        let err = parse("[nats]\nmax_payload = \"0B\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.max_payload");
        let err = parse("[nats]\nduplicate_window = \"soon\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.duplicate_window");
        let err = parse("[nats]\nlisten_on = \"x\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.listen_on");
    }

    #[test]
    fn syntax_errors_are_reported_on_one_line() {
        let err = parse("[log\n").unwrap_err();
        assert_eq!(err.field(), "(document)");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn every_problem_is_reported_in_file_order_with_its_line() {
        let text = "[log]\nfsync = \"sometimes\"\nsegment_bytes = \"64XB\"\n\
                    [mqtt]\nlisten = \"localhost\"\nmax_inflight = 0\n\
                    [[route]]\nnats = \"machines/+/status\"\nkafka_topic = \"m\"\nkey = \"{topic.2}\"\n\
                    [[route]]\nmqtt = \"a\"\nkafka_topic = \"bad topic\"\n";
        let err = parse(text).unwrap_err();
        let problems = err.problems();
        let found: Vec<(&str, Option<usize>)> = problems
            .iter()
            .map(|p| {
                let line = match p.at {
                    Some(Location::Line { line, .. }) => Some(line),
                    _ => None,
                };
                (p.field.as_str(), line)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("log.fsync", Some(2)),
                ("log.segment_bytes", Some(3)),
                ("mqtt.listen", Some(5)),
                ("mqtt.max_inflight", Some(6)),
                ("route[1].nats", Some(8)),
                ("route[2].kafka_topic", Some(13)),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("test.toml: 6 problems:\n  log.fsync: "),
            "{text}"
        );
        assert!(
            text.contains("write nats = \"machines.*.status\""),
            "{text}"
        );
        assert!(
            !text.contains("route[1].key"),
            "the key is not blamed for the filter's mistake: {text}"
        );
    }

    #[test]
    fn a_route_table_with_single_brackets_says_to_write_double_ones() {
        let err = parse("[route]\nmqtt = \"a\"\nkafka_topic = \"t\"\n").unwrap_err();
        assert_eq!(err.field(), "route");
        assert!(err.to_string().contains("write [[route]]"), "{err}");
        let err = parse(
            "[route]\nmqtt = \"a\"\nkafka_topic = \"t\"\n[route]\nmqtt = \"b\"\nkafka_topic = \"u\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("write [[route]]"), "{text}");
        assert!(text.contains("line 4"), "{text}");
        assert_eq!(
            err.problems().len(),
            1,
            "reported once, not for each key: {text}"
        );
    }

    #[test]
    fn listen_addresses_say_what_is_expected() {
        for (value, want) in [
            ("localhost:1883", None),
            ("127.0.0.1", Some("write \"127.0.0.1:1883\"")),
            ("gw.local:1883", Some("e.g. \"0.0.0.0:1883\"")),
        ] {
            let result = parse(&format!("[mqtt]\nlisten = \"{value}\"\n"));
            match want {
                None => assert_eq!(
                    result.unwrap().mqtt.listen,
                    "127.0.0.1:1883".parse().unwrap()
                ),
                Some(want) => {
                    let err = result.unwrap_err();
                    assert_eq!(err.field(), "mqtt.listen");
                    assert!(err.to_string().contains(want), "{value}: {err}");
                }
            }
        }
        let err = parse("[nats]\nlisten = \"0.0.0.0\"\n").unwrap_err();
        assert!(err.to_string().contains("\"0.0.0.0:4222\""), "{err}");
    }

    #[test]
    fn a_bad_override_names_its_variable_and_a_good_one_applies() {
        let overrides = env::scan(
            [
                ("EDGE_BROKER_LOG_FSYNC".to_owned(), "sometimes".to_owned()),
                ("EDGE_BROKER_MQTT_MAX_INFLIGHT".to_owned(), "7".to_owned()),
            ],
            &env::section_names(),
        )
        .unwrap()
        .overrides;
        let err = Config::parse_with(
            "[log]\nfsync = \"always\"\n",
            Path::new("t.toml"),
            &overrides,
        )
        .unwrap_err();
        assert_eq!(err.field(), "log.fsync");
        assert!(
            err.to_string().contains("(from EDGE_BROKER_LOG_FSYNC)"),
            "{err}"
        );
        let config = Config::parse_with("", Path::new("t.toml"), &overrides[1..]).unwrap();
        assert_eq!(config.mqtt.max_inflight, 7);
    }

    #[test]
    fn a_missing_file_is_described_once() {
        let err = Config::load(Path::new("/nonexistent/edge.toml")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            text.matches("No such file").count(),
            1,
            "the reason appears once: {text}"
        );
    }

    #[test]
    fn fsync_interval_must_be_positive() {
        assert!(parse_fsync("interval:0").is_err());
        assert!(parse_fsync("interval:10").is_err());
        assert_eq!(
            parse_fsync("interval:1s"),
            Ok(FsyncPolicy::Interval(Duration::from_secs(1)))
        );
    }
}
