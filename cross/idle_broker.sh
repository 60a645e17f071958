# Sourced by cross/footprint.sh and cross/startup_profile.sh: the one config of the idle broker
# they both run (MQTT, NATS, /metrics, one route, fsync "always"), so that the start-up profile
# is taken from the broker the footprint measures.
#
# idle_broker_toml NODE_ID DATA_DIR MQTT_PORT NATS_PORT METRICS_PORT [MAX_CONNECTIONS]
idle_broker_toml() {
  cat <<TOML
[node]
id = "$1"
data_dir = "$2"

[mqtt]
listen = "127.0.0.1:$3"
${6:+max_connections = $6
}
[nats]
listen = "127.0.0.1:$4"

[log]
fsync = "always"

[metrics]
listen = "127.0.0.1:$5"

[[route]]
mqtt = "sensors/#"
kafka_topic = "sensors"
TOML
}
