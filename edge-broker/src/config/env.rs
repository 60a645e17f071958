//! Environment overrides for containers and unit files: `EDGE_BROKER_<SECTION>_<KEY>=value`.
//!
//! `EDGE_BROKER_LOG_FSYNC=never` sets `[log] fsync`, `EDGE_BROKER_MQTT_LISTEN=0.0.0.0:1883` sets
//! `[mqtt] listen`. Values are read as TOML when they parse as one (`5`, `true`,
//! `["a:9092", "b:9092"]`), else as a string. Sections have no underscore, so the first `_`
//! after the section name separates it from the key. `EDGE_BROKER_CONFIG`, `EDGE_BROKER_LOG` and
//! `EDGE_BROKER_LOG_FORMAT` are the command line's and the logger's, not overrides.

/// Prefix of every override.
pub const PREFIX: &str = "EDGE_BROKER_";

/// Variables with the prefix that are not config overrides.
const RESERVED: [&str; 3] = ["CONFIG", "LOG", "LOG_FORMAT"];

/// One override taken from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The variable's name, for error messages.
    pub variable: String,
    /// Section (`log`).
    pub section: String,
    /// Key within the section (`max_bytes`).
    pub key: String,
    /// The value.
    pub value: toml::Value,
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

/// The overrides among `vars` (normally `std::env::vars()`), sorted by name.
pub fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, OverrideError> {
    let mut found = Vec::new();
    for (variable, raw) in vars {
        let Some(rest) = variable.strip_prefix(PREFIX) else {
            continue;
        };
        if RESERVED.contains(&rest) {
            continue;
        }
        let Some((section, key)) = rest.split_once('_') else {
            return Err(OverrideError {
                variable,
                message: "expected EDGE_BROKER_<SECTION>_<KEY>".to_owned(),
            });
        };
        found.push(Override {
            section: section.to_ascii_lowercase(),
            key: key.to_ascii_lowercase(),
            value: parse_value(&raw),
            variable,
        });
    }
    found.sort_by(|a, b| a.variable.cmp(&b.variable));
    Ok(found)
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Applies overrides to config text, returning the merged document.
pub fn apply(text: &str, overrides: &[Override]) -> Result<String, OverrideError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| OverrideError {
        variable: overrides
            .first()
            .map(|o| o.variable.clone())
            .unwrap_or_default(),
        message: format!(
            "the config file must parse before overrides apply: {}",
            e.message()
        ),
    })?;
    for o in overrides {
        let section = table
            .entry(o.section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            return Err(OverrideError {
                variable: o.variable.clone(),
                message: format!("[{}] is not a table", o.section),
            });
        };
        section.insert(o.key.clone(), o.value.clone());
    }
    toml::to_string(&table).map_err(|e| OverrideError {
        variable: overrides
            .first()
            .map(|o| o.variable.clone())
            .unwrap_or_default(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_split_section_and_key_and_type_values() {
        let found = overrides(vars(&[
            ("EDGE_BROKER_LOG_MAX_BYTES", "1GiB"),
            ("EDGE_BROKER_MQTT_MAX_INFLIGHT", "5"),
            ("EDGE_BROKER_CONFIG", "/etc/x.toml"),
            ("EDGE_BROKER_LOG", "debug"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].section.as_str(), found[0].key.as_str()),
            ("log", "max_bytes")
        );
        assert_eq!(found[0].value, toml::Value::String("1GiB".into()));
        assert_eq!(found[1].value, toml::Value::Integer(5));
    }

    #[test]
    fn a_name_without_a_key_is_an_error() {
        let err = overrides(vars(&[("EDGE_BROKER_NODE", "x")])).unwrap_err();
        assert_eq!(err.variable, "EDGE_BROKER_NODE");
    }

    #[test]
    fn apply_replaces_and_adds_keys() {
        let found = overrides(vars(&[
            ("EDGE_BROKER_NODE_ID", "gw-9"),
            ("EDGE_BROKER_LOG_FSYNC", "never"),
        ]))
        .unwrap();
        let merged = apply("[node]\nid = \"gw-1\"\n", &found).unwrap();
        let table: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(table["node"]["id"].as_str(), Some("gw-9"));
        assert_eq!(table["log"]["fsync"].as_str(), Some("never"));
    }
}
