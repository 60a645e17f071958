"""Saved MQTT state under the issue-11 attacks: RSS and bytes written (/proc/PID/io
write_bytes) of edge-broker binaries side by side, printed as a table.

Usage: bench_state.py [--bin LABEL=PATH ...] [--sessions N] [--max-sessions N]

  attack "sessions": N persistent sessions (3.1.1, clean session off) subscribe to `#` at QoS 1
    and go offline; then 200 QoS 1 publishes of 1 KB; measured until 5 s after the first
    publish; then a restart on the same data.
  attack "retained": 300 retained QoS 1 publishes of 1,000,000 bytes (v5) on distinct topics;
    measured until 5 s after the first publish.
  latency: 500 SUBSCRIBE round trips of a persistent session, and 500 QoS 1 publishes to a
    topic with one offline persistent subscriber (median / p99 of the round trip).
  memory: what one offline persistent session (3.1.1, one subscription to `#`) and one queued
    delivery take: 1,000 sessions, then 100 QoS 1 publishes of 10 bytes (100,000 deliveries).
  persistent: QoS 1 from one publisher (100 in flight) to one online persistent subscriber
    (3.1.1, acknowledging as it reads), 20,000 messages of 200 bytes: throughput and bytes
    written per message (the cost of saving each delivery's progress).

Each binary runs against its own fresh data directory, one after the other (wrap the run in
`flock /tmp/cpu.lock`).
"""
import argparse
import os
import threading
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqtt_scenarios as sc  # noqa: E402
from mqtt_raw import PUBACK, Client  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def io_write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def state_bytes(data):
    total = 0
    for root, _, files in os.walk(os.path.join(data, "mqtt")):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


class Broker:
    def __init__(self, binary, data, extra=""):
        self.port = free_port()
        self.dir = data
        cfg = os.path.join(data, "cfg.toml")
        with open(cfg, "w") as f:
            f.write(f'[node]\nid = "bench"\ndata_dir = "{data}/data"\n\n'
                    f'[mqtt]\nlisten = "127.0.0.1:{self.port}"\n{extra}\n'
                    '[nats]\nenabled = false\n\n[kafka]\nenabled = false\n\n'
                    '[metrics]\nenabled = false\n')
        self.log = open(os.path.join(data, "broker.log"), "ab")
        self.proc = subprocess.Popen([binary, "--config", cfg], stderr=self.log,
                                     stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{binary} did not start")

    def sample(self):
        return io_write_bytes(self.proc.pid), rss_mib(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def sessions_attack(binary, n, extra):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, d, extra)
        w0, r0 = b.sample()
        made = sc.many_sessions("127.0.0.1", b.port, str(n), "att", "311")
        w1, r1 = b.sample()
        started = time.monotonic()
        sc.publish_many("127.0.0.1", b.port, "a/b", "200", "1000", "1")
        time.sleep(max(0.0, 5 - (time.monotonic() - started)))
        w2, r2 = b.sample()
        b.stop()
        on_disk = state_bytes(os.path.join(d, "data"))
        b = Broker(binary, d, extra)
        time.sleep(1)
        _, r3 = b.sample()
        b.stop()
        return {
            "sessions made": made["results"],
            "written: sessions (MB)": (w1 - w0) / 1e6,
            "written: 200 publishes + 5 s (MB)": (w2 - w1) / 1e6,
            "RSS after publishes (MiB)": r2,
            "RSS growth (MiB)": r2 - r0,
            "state on disk after stop (MB)": on_disk / 1e6,
            "RSS after restart (MiB)": r3,
        }


def retained_attack(binary, extra):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, d, extra)
        w0, r0 = b.sample()
        started = time.monotonic()
        out = sc.publish_many("127.0.0.1", b.port, "big", "300", "1000000", "1", "1", "5", "1")
        time.sleep(max(0.0, 5 - (time.monotonic() - started)))
        w1, r1 = b.sample()
        held = sc.retained_count("127.0.0.1", b.port, "big/#")
        b.stop()
        return {
            "PUBACK codes": out["acks"],
            "retained held": held["count"],
            "written in 5 s (MB)": (w1 - w0) / 1e6,
            "RSS growth (MiB)": r1 - r0,
            "state on disk after stop (MB)": state_bytes(os.path.join(d, "data")) / 1e6,
        }


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def latency(binary, extra):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, d, extra)
        sub = Client("127.0.0.1", b.port, True)
        sub.connect("lat-sub", clean=True, props_={"session_expiry": 300})
        rtts = []
        for i in range(500):
            t = time.perf_counter()
            codes = sub.subscribe((f"lat/{i % 10}", 1))
            rtts.append((time.perf_counter() - t) * 1e3)
            assert codes == [1], f"SUBACK {codes}"
        sub.close()
        pub = Client("127.0.0.1", b.port, True)
        pub.connect("lat-pub")
        prtts = []
        for _ in range(500):
            t = time.perf_counter()
            pub.publish("lat/1", "x" * 200, qos=1)
            ack = pub.recv(10)
            assert ack["type"] == PUBACK
            prtts.append((time.perf_counter() - t) * 1e3)
        pub.disconnect()
        b.stop()
        return {
            "SUBSCRIBE round trip p50 (ms)": statistics.median(rtts),
            "SUBSCRIBE round trip p99 (ms)": percentile(rtts, 0.99),
            "QoS 1 to an offline persistent subscriber p50 (ms)": statistics.median(prtts),
            "QoS 1 to an offline persistent subscriber p99 (ms)": percentile(prtts, 0.99),
        }


def persistent(binary, extra, n=20000, window=100):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, d, extra)
        sub = Client("127.0.0.1", b.port, False, timeout=30)
        sub.connect("thr-sub", clean=False)
        sub.subscribe(("thr/#", 1))
        got = []

        def read():
            got.extend(sub.messages(10.0, count=n))
        reader = threading.Thread(target=read)
        reader.start()
        pub = Client("127.0.0.1", b.port, False, timeout=30)
        pub.connect("thr-pub")
        w0, _ = b.sample()
        started = time.monotonic()
        payload = b"x" * 200
        sent = acked = 0
        while acked < n:
            while sent < n and sent - acked < window:
                pub.publish("thr/t", payload, qos=1, packet_id=sent % 65535 + 1)
                sent += 1
            ack = pub.recv(30)
            assert ack["type"] == PUBACK
            acked += 1
        reader.join()
        secs = time.monotonic() - started
        w1, _ = b.sample()
        pub.disconnect()
        sub.disconnect()
        b.stop()
        return {
            "delivered": len(got),
            "msg/s": len(got) / secs,
            "bytes written per message": (w1 - w0) / n,
        }


def memory(binary, extra):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, d, extra)
        time.sleep(0.5)
        _, r0 = b.sample()
        sc.many_sessions("127.0.0.1", b.port, "1000", "mem", "311")
        time.sleep(0.5)
        _, r1 = b.sample()
        sc.publish_many("127.0.0.1", b.port, "m/t", "100", "10", "1")
        time.sleep(0.5)
        _, r2 = b.sample()
        b.stop()
        return {
            "RSS idle (MiB)": r0,
            "per offline session (bytes)": (r1 - r0) * 1024 * 1024 / 1000,
            "per queued delivery (bytes)": (r2 - r1) * 1024 * 1024 / 100000,
        }


def fmt(v):
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in sorted(v.items()))
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True, help="LABEL=PATH")
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--config", action="append", default=[],
                    help="LABEL=TOML lines for the [mqtt] section of that binary")
    ap.add_argument("--only", choices=["sessions", "retained", "latency", "persistent", "memory"],
                    action="append")
    args = ap.parse_args()
    bins = [b.split("=", 1) for b in args.bin]
    extras = dict(c.split("=", 1) for c in args.config)
    only = args.only or ["sessions", "retained", "latency", "persistent", "memory"]
    for name in only:
        rows = {}
        for label, path in bins:
            extra = extras.get(label, "").replace("\\n", "\n")
            if name == "sessions":
                rows[label] = sessions_attack(path, args.sessions, extra)
            elif name == "retained":
                rows[label] = retained_attack(path, extra)
            elif name == "persistent":
                rows[label] = persistent(path, extra)
            elif name == "memory":
                rows[label] = memory(path, extra)
            else:
                rows[label] = latency(path, extra)
        keys = list(next(iter(rows.values())).keys())
        width = max(len(k) for k in keys)
        print(f"\n{name}")
        print(f"| {'':{width}} | " + " | ".join(label for label, _ in bins) + " |")
        print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(label) + 2) for label, _ in bins) + "|")
        for k in keys:
            print(f"| {k:{width}} | " + " | ".join(fmt(rows[label][k]) for label, _ in bins) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
