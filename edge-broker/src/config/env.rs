//! The `EDGE_BROKER_*` environment: config overrides and process settings, in two namespaces
//! that cannot collide.
//!
//! - **Config overrides** are `EDGE_BROKER_<SECTION>_<KEY>` where `<SECTION>` is a section of the
//!   config file (`node`, `log`, `mqtt`, …, read from the schema itself): `EDGE_BROKER_LOG_FSYNC=never`
//!   sets `[log] fsync`, `EDGE_BROKER_MQTT_LISTEN=0.0.0.0:1883` sets `[mqtt] listen`. Values are
//!   read as TOML when they parse as one (`5`, `true`, `["a:9092", "b:9092"]`), else as a string.
//!   Sections have no underscore, so the first `_` after the section name ends it.
//! - **Process settings** have names whose first word is not a section: `EDGE_BROKER_CONFIG`
//!   (the config file), `EDGE_BROKER_LOGGING` (diagnostics filter) and
//!   `EDGE_BROKER_LOGGING_FORMAT`. No section may be named `config` or `logging` (tested).
//! - **Deprecated names**: `EDGE_BROKER_LOG` and `EDGE_BROKER_LOG_FORMAT` (earlier builds: the
//!   diagnostics variables shared the `LOG` word with the `[log]` section) still work and say
//!   which name replaces them.
//! - **Everything else** with the prefix belongs to someone else (`EDGE_BROKER_BIN` of
//!   `examples/demo.sh`) and is left alone; a name shaped like an override of a section that
//!   does not exist (`EDGE_BROKER_MQQT_LISTEN`) is reported as ignored, since it is most likely
//!   a typo.

use serde::de::{self, Deserialize, Visitor};

/// Prefix of every variable edge-broker reads.
pub const PREFIX: &str = "EDGE_BROKER_";

/// The config file, also `--config`.
pub const CONFIG: &str = "EDGE_BROKER_CONFIG";
/// Diagnostics filter (`level` and `target=level` directives, comma-separated); `RUST_LOG` wins
/// when both are set.
pub const LOGGING: &str = "EDGE_BROKER_LOGGING";
/// Diagnostics format: `json` or `text`.
pub const LOGGING_FORMAT: &str = "EDGE_BROKER_LOGGING_FORMAT";

/// First words after the prefix that name process settings, never config sections.
pub const PROCESS_WORDS: [&str; 2] = ["CONFIG", "LOGGING"];

/// Old variable names still read, and the names that replace them.
pub const DEPRECATED: [(&str, &str); 2] = [
    ("EDGE_BROKER_LOG", LOGGING),
    ("EDGE_BROKER_LOG_FORMAT", LOGGING_FORMAT),
];

/// Every variable edge-broker reads besides the overrides, with what it does (for `--help`).
pub const VARIABLES: [(&str, &str); 10] = [
    (
        CONFIG,
        "configuration file, like --config (without either: built-in defaults)",
    ),
    (
        LOGGING,
        "diagnostics filter: error, warn, info (default), debug, trace, or per module \
         (\"info,edge_bridge=debug\"); was EDGE_BROKER_LOG",
    ),
    (
        LOGGING_FORMAT,
        "diagnostics format: \"json\" (one JSON object a line) or \"text\" (default); \
         was EDGE_BROKER_LOG_FORMAT",
    ),
    (
        "RUST_LOG",
        "diagnostics filter; wins over EDGE_BROKER_LOGGING",
    ),
    (
        "TOKIO_WORKER_THREADS",
        "worker threads of the async runtime (default: one per CPU core)",
    ),
    (
        "JOURNAL_STREAM",
        "set by systemd when stderr goes to the journal: lines carry no timestamp",
    ),
    (
        "NOTIFY_SOCKET",
        "set by systemd (Type=notify): READY/STATUS/WATCHDOG/STOPPING go there",
    ),
    (
        "WATCHDOG_USEC",
        "set by systemd (WatchdogSec=): watchdog interval",
    ),
    (
        "WATCHDOG_PID",
        "set by systemd: the process the watchdog applies to",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "set by systemd (LoadCredential=): a *_file setting may start with \
         $CREDENTIALS_DIRECTORY/",
    ),
];

/// One override taken from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable's name, for error messages.
    pub variable: String,
    /// Section (`log`).
    pub section: String,
    /// Key within the section (`max_bytes`).
    pub key: String,
    /// The value as given; read as TOML when it parses as a TOML value, else as a string.
    pub raw: String,
}

/// Why a variable could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {variable}: {message}")]
pub struct OverrideError {
    /// The variable.
    pub variable: String,
    /// What is wrong.
    pub message: String,
}

/// A prefixed variable that is neither an override nor a process setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The variable.
    pub variable: String,
    /// Why it is not read (names the sections when it looks like a misspelt override).
    pub reason: String,
}

/// What the prefixed variables of an environment mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Config overrides, sorted by variable name.
    pub overrides: Vec<Override>,
    /// Variables that look like overrides of a section that does not exist.
    pub ignored: Vec<Ignored>,
    /// Deprecated names in use: (old, new).
    pub deprecated: Vec<(&'static str, &'static str)>,
}

/// Sorts the prefixed variables among `vars` (normally `std::env::vars()`) into overrides of
/// `sections` (the config's section names, see [`section_names`]) and the rest.
pub fn scan(
    vars: impl IntoIterator<Item = (String, String)>,
    sections: &[&str],
) -> Result<Scan, OverrideError> {
    let mut found = Scan::default();
    for (variable, raw) in vars {
        let Some(rest) = variable.strip_prefix(PREFIX) else {
            continue;
        };
        if let Some((old, new)) = DEPRECATED.iter().find(|(old, _)| *old == variable) {
            found.deprecated.push((old, new));
            continue;
        }
        let (word, key) = match rest.split_once('_') {
            Some((word, key)) => (word, Some(key)),
            None => (rest, None),
        };
        if PROCESS_WORDS.contains(&word) {
            continue;
        }
        let section = word.to_ascii_lowercase();
        let bad = |message: String| OverrideError {
            variable: variable.clone(),
            message,
        };
        if section == "route" {
            return Err(bad(
                "[[route]] entries cannot be set from the environment; write them in the config file"
                    .to_owned(),
            ));
        }
        if !sections.contains(&section.as_str()) {
            // Not ours. A SECTION_KEY shape is most likely a misspelt override: say so.
            if key.is_some_and(|k| !k.is_empty()) {
                found.ignored.push(Ignored {
                    reason: format!(
                        "not a config override: the config has no [{section}] section (sections: {})",
                        sections.join(", ")
                    ),
                    variable,
                });
            }
            continue;
        }
        match key.filter(|k| !k.is_empty()) {
            Some(key) => found.overrides.push(Override {
                section,
                key: key.to_ascii_lowercase(),
                raw,
                variable,
            }),
            None => {
                return Err(bad(format!(
                    "names the [{section}] section but no key: expected EDGE_BROKER_{word}_<KEY>"
                )));
            }
        }
    }
    found.overrides.sort_by(|a, b| a.variable.cmp(&b.variable));
    found.ignored.sort_by(|a, b| a.variable.cmp(&b.variable));
    found.deprecated.sort();
    Ok(found)
}

/// How diagnostics are configured by the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// The filter and the variable it came from (`RUST_LOG`, `EDGE_BROKER_LOGGING` or a
    /// deprecated name); `None`: the default `info`.
    pub filter: Option<(String, &'static str)>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Deprecated names read: (old, new).
    pub deprecated: Vec<(&'static str, &'static str)>,
}

/// Reads the diagnostics settings from `vars`, new names first, then the deprecated ones.
pub fn logging_settings(vars: impl IntoIterator<Item = (String, String)>) -> LoggingSettings {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut deprecated = Vec::new();
    let mut first = |names: [&'static str; 2]| {
        let [new, old] = names;
        if let Some(value) = get(new) {
            return Some((value, new));
        }
        let value = get(old)?;
        deprecated.push((old, new));
        Some((value, old))
    };
    let filter = get("RUST_LOG")
        .map(|value| (value, "RUST_LOG"))
        .or_else(|| first([LOGGING, DEPRECATED[0].0]));
    let json = first([LOGGING_FORMAT, DEPRECATED[1].0]).is_some_and(|(f, _)| f == "json");
    LoggingSettings {
        filter,
        json,
        deprecated,
    }
}

/// The variables section of `--help`: process settings, overrides and what systemd sets.
pub fn help_text(sections: &[&str]) -> String {
    let mut text = String::from("Environment:\n");
    for (name, what) in VARIABLES {
        text.push_str(&format!("  {name}\n      {what}\n"));
    }
    text.push_str(&format!(
        "  EDGE_BROKER_<SECTION>_<KEY>\n      sets one config key, e.g. EDGE_BROKER_LOG_FSYNC=never, \
         EDGE_BROKER_MQTT_LISTEN=0.0.0.0:1883; SECTION is one of {}; values are read as TOML \
         when they parse as one\n",
        sections
            .iter()
            .map(|s| s.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    text.push_str(
        "Other EDGE_BROKER_* names are not read (a misspelt section is reported by `check`).",
    );
    text
}

/// The sections an override may name: the table sections of the config schema (arrays of
/// tables such as `[[route]]` cannot be set from the environment).
pub fn section_names() -> Vec<&'static str> {
    struct_fields::<super::Config>()
        .iter()
        .copied()
        .filter(|name| *name != "route")
        .collect()
}

/// The field names serde's derive gives a struct (its TOML keys), read by asking it to
/// deserialize from a probe that only records them.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    #[derive(Debug)]
    struct Done;
    impl std::fmt::Display for Done {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Done {}
    impl de::Error for Done {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Done
        }
    }
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Done;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Done> {
            *self.0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SECTIONS: [&str; 3] = ["node", "log", "mqtt"];

    #[test]
    fn sections_come_from_the_schema_and_never_shadow_process_settings() {
        let sections = section_names();
        for expected in ["node", "log", "mqtt", "nats", "metrics", "kafka"] {
            assert!(sections.contains(&expected), "{sections:?}");
        }
        assert!(!sections.contains(&"route"));
        for word in PROCESS_WORDS {
            assert!(
                !sections.contains(&word.to_ascii_lowercase().as_str()),
                "a [{word}] section would collide with the process setting EDGE_BROKER_{word}"
            );
        }
    }

    #[test]
    fn overrides_split_section_and_key() {
        let found = scan(
            vars(&[
                ("EDGE_BROKER_LOG_MAX_BYTES", "1GiB"),
                ("EDGE_BROKER_MQTT_MAX_INFLIGHT", "5"),
                ("EDGE_BROKER_CONFIG", "/etc/x.toml"),
                ("EDGE_BROKER_LOGGING", "debug"),
                ("EDGE_BROKER_LOGGING_FORMAT", "json"),
                ("PATH", "/bin"),
            ]),
            &SECTIONS,
        )
        .unwrap();
        assert_eq!(found.overrides.len(), 2, "{found:?}");
        assert_eq!(
            (
                found.overrides[0].section.as_str(),
                found.overrides[0].key.as_str()
            ),
            ("log", "max_bytes")
        );
        assert_eq!(found.overrides[1].raw, "5");
        assert!(found.ignored.is_empty() && found.deprecated.is_empty());
    }

    #[test]
    fn other_programs_variables_are_left_alone() {
        // examples/demo.sh documents EDGE_BROKER_BIN; it used to stop the broker from starting.
        let found = scan(
            vars(&[("EDGE_BROKER_BIN", "/x"), ("EDGE_BROKER_MQQT_LISTEN", "y")]),
            &SECTIONS,
        )
        .unwrap();
        assert!(found.overrides.is_empty());
        assert_eq!(found.ignored.len(), 1, "{found:?}");
        assert_eq!(found.ignored[0].variable, "EDGE_BROKER_MQQT_LISTEN");
        assert!(
            found.ignored[0]
                .reason
                .contains("no [mqqt] section (sections: node, log, mqtt)"),
            "{:?}",
            found.ignored[0]
        );
    }

    #[test]
    fn deprecated_names_still_work_and_are_reported() {
        let found = scan(
            vars(&[
                ("EDGE_BROKER_LOG", "debug"),
                ("EDGE_BROKER_LOG_FORMAT", "json"),
            ]),
            &SECTIONS,
        )
        .unwrap();
        assert!(found.overrides.is_empty(), "{found:?}");
        assert_eq!(found.deprecated.len(), 2);
        let settings = logging_settings(vars(&[
            ("EDGE_BROKER_LOG", "debug"),
            ("EDGE_BROKER_LOG_FORMAT", "json"),
        ]));
        assert_eq!(settings.filter, Some(("debug".into(), "EDGE_BROKER_LOG")));
        assert!(settings.json);
        assert_eq!(settings.deprecated.len(), 2);
        let settings = logging_settings(vars(&[
            ("EDGE_BROKER_LOGGING", "warn"),
            ("EDGE_BROKER_LOG", "debug"),
            ("EDGE_BROKER_LOGGING_FORMAT", "text"),
        ]));
        assert_eq!(settings.filter, Some(("warn".into(), LOGGING)));
        assert!(!settings.json);
        assert!(settings.deprecated.is_empty(), "new names win silently");
        let settings = logging_settings(vars(&[("RUST_LOG", "trace"), (LOGGING, "warn")]));
        assert_eq!(settings.filter, Some(("trace".into(), "RUST_LOG")));
    }

    #[test]
    fn malformed_overrides_are_errors() {
        let err = scan(vars(&[("EDGE_BROKER_NODE", "x")]), &SECTIONS).unwrap_err();
        assert_eq!(err.variable, "EDGE_BROKER_NODE");
        let err = scan(vars(&[("EDGE_BROKER_LOG_", "x")]), &SECTIONS).unwrap_err();
        assert_eq!(err.variable, "EDGE_BROKER_LOG_");
        let err = scan(vars(&[("EDGE_BROKER_ROUTE_MQTT", "x")]), &SECTIONS).unwrap_err();
        assert!(err.message.contains("[[route]]"), "{err}");
    }

    #[test]
    fn help_lists_every_variable() {
        let help = help_text(&SECTIONS);
        for (name, _) in VARIABLES {
            assert!(help.contains(name), "{name} missing from {help}");
        }
        assert!(help.contains("NODE, LOG, MQTT"), "{help}");
    }
}
