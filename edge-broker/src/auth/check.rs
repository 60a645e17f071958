//! What `edge-broker check` (and the start-up log) warns about: anonymous access where the
//! network can reach it, a NATS token that anonymous clients can bypass, and secrets others
//! can read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Warnings about `config`'s security, one line each (empty: nothing to say).
pub fn security_warnings(config: &Config, config_path: Option<&Path>) -> Vec<String> {
    let mut warnings = Vec::new();
    let exposed = |addr: &SocketAddr| !addr.ip().is_loopback();
    let mqtt = &config.mqtt;
    if mqtt.enabled && config.mqtt_anonymous_allowed() {
        let mut open: Vec<String> = Vec::new();
        if exposed(&mqtt.listen) {
            open.push(format!("mqtt.listen = {}", mqtt.listen));
        }
        // Mutual TLS authenticates every client of the TLS listener.
        if let Some(tls) = mqtt
            .tls_listen
            .filter(|a| exposed(a) && mqtt.tls_client_ca.is_none())
        {
            open.push(format!("mqtt.tls_listen = {tls}"));
        }
        if let Some(ws) = mqtt.ws_listen.filter(exposed) {
            open.push(format!("mqtt.ws_listen = {ws}"));
        }
        if let Some(wss) = mqtt
            .ws_tls_listen
            .filter(|a| exposed(a) && mqtt.tls_client_ca.is_none())
        {
            open.push(format!("mqtt.ws_tls_listen = {wss}"));
        }
        if !open.is_empty() {
            warnings.push(format!(
                "anonymous MQTT clients are accepted on a non-loopback address ({}): set auth.password_file (and leave mqtt.allow_anonymous unset or false), or listen on 127.0.0.1",
                open.join(", ")
            ));
        }
    }
    if mqtt.enabled
        && !config.mqtt_anonymous_allowed()
        && config.auth.password_file.is_none()
        && mqtt.tls_client_ca.is_none()
    {
        warnings.push(
            "mqtt.allow_anonymous = false without auth.password_file or mqtt.tls_client_ca: no MQTT client can log in"
                .to_owned(),
        );
    }
    let nats = &config.nats;
    if nats.enabled && config.nats_anonymous_allowed() && exposed(&nats.listen) {
        warnings.push(format!(
            "anonymous NATS clients are accepted on a non-loopback address (nats.listen = {}): configure credentials (auth.password_file, nats.users, nats.token_file), or listen on 127.0.0.1",
            nats.listen
        ));
    }
    if (nats.token.is_some() || nats.token_file.is_some()) && nats.allow_anonymous == Some(true) {
        warnings.push(
            "nats.allow_anonymous = true with a NATS token: clients without the token get in too"
                .to_owned(),
        );
    }
    if nats.token.is_some() || nats.users.iter().any(|u| u.password.is_some()) {
        let readable = config_path.is_some_and(crate::auth::secret::world_readable);
        warnings.push(format!(
            "NATS secrets are written in the config file{}: prefer nats.token_file / nats.users[].password_file (systemd credentials)",
            if readable { ", which other users can read" } else { "" }
        ));
    }
    let mut files: Vec<(&str, &PathBuf)> = [
        ("auth.password_file", &config.auth.password_file),
        ("nats.token_file", &nats.token_file),
        ("mqtt.tls_key", &mqtt.tls_key),
        ("nats.tls_key", &nats.tls_key),
        ("kafka.tls_key", &config.kafka.tls_key),
        ("kafka.sasl_password_file", &config.kafka.sasl_password_file),
        ("kafka.sasl_token_file", &config.kafka.sasl_token_file),
    ]
    .into_iter()
    .filter_map(|(field, path)| Some((field, path.as_ref()?)))
    .collect();
    files.extend(
        nats.users
            .iter()
            .filter_map(|u| Some(("nats.users[].password_file", u.password_file.as_ref()?))),
    );
    for (field, path) in files {
        if crate::auth::secret::world_readable(path) {
            warnings.push(format!(
                "{field}: {} can be read by every user on this machine: chmod o-r it (or use systemd's LoadCredential=)",
                path.display()
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn defaults_on_loopback_say_nothing() {
        assert!(security_warnings(&config(""), None).is_empty());
    }

    #[test]
    fn anonymous_access_on_the_network_and_token_bypass_are_named() {
        let w = security_warnings(
            &config("[mqtt]\nlisten = \"0.0.0.0:1883\"\n[nats]\nlisten = \"0.0.0.0:4222\"\n"),
            None,
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("mqtt.listen = 0.0.0.0:1883"), "{w:?}");
        assert!(w[1].contains("nats.listen"), "{w:?}");
        let w = security_warnings(
            &config("[nats]\ntoken = \"t\"\nallow_anonymous = true\n"),
            None,
        );
        assert!(w.iter().any(|l| l.contains("without the token")), "{w:?}");
        assert!(w.iter().any(|l| l.contains("nats.token_file")), "{w:?}");
        let w = security_warnings(&config("[mqtt]\nallow_anonymous = false\n"), None);
        assert!(
            w.iter().any(|l| l.contains("no MQTT client can log in")),
            "{w:?}"
        );
    }

    #[test]
    fn world_readable_secret_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("[nats]\ntoken_file = \"{}\"\n", token.display());
        let w = security_warnings(&config(&text), None);
        assert!(w.iter().any(|l| l.starts_with("nats.token_file")), "{w:?}");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(security_warnings(&config(&text), None).is_empty());
    }
}
