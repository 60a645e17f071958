#!/usr/bin/env python3
"""The log's group commit under a QoS 1 load, per build: publish rate, the broker's fdatasyncs
(`edge_log_fsyncs_total`, `edge_log_fsync_seconds`) and records per fdatasync, read from its
/metrics before and after. Shows whether a publisher's rate is bound by the disk's syncs (one
publisher with a window of W in flight gets about W/2 records per sync) and what a log option
does to the syncs themselves (e.g. `preallocate`: no journal commit per sync).

  .venv/bin/python tests/tools/sync_load.py [--count 300000] [--window 100] [--connections 1]
      [--rounds 2] [--blast target/release/mqtt-blast] LABEL=BROKER[;LOG LINES]...

A build may carry `[log]` lines after a `;` (several separated by `;`), e.g.
`'off=target/release/edge-broker;preallocate = false'`. The broker runs bench_bridge.py's
end-to-end configuration (route `sensors/+/t`, `fsync = "always"`) with Kafka unreachable;
mqtt-blast publishes --count QoS 1 messages of 200 B over --connections connections, --window
unacknowledged each. Builds run in turn, round after round. Prints one line per run.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402


def metrics(port):
    """(fdatasyncs, seconds spent in them) from the broker's /metrics (read while it is idle)."""
    return (bb.metric(port, "edge_log_fsync_seconds_count"),
            bb.metric(port, "edge_log_fsync_seconds_sum"))


def run(label, binary, log_extra, args):
    tmp = tempfile.mkdtemp(prefix="sync-load-")
    mqtt, port = bb.free_port(), bb.free_port()
    with open(os.path.join(tmp, "broker.log"), "w") as log:
        broker = bb.edge_broker(binary, os.path.join(tmp, "data"), mqtt, port, "127.0.0.1:1", log,
                                "always", log_extra=log_extra)
        try:
            syncs0, secs0 = metrics(port)
            bb.WINDOW, bb.BLAST = args.window, args.blast
            took, n = bb.publish(mqtt, args.count, 200, args.connections)
            syncs1, secs1 = metrics(port)
        finally:
            bb.stop(broker)
    shutil.rmtree(tmp, ignore_errors=True)
    syncs, secs = syncs1 - syncs0, secs1 - secs0
    print(f"| {label} | {n / took:,.0f} | {syncs:,.0f} | {secs / syncs * 1e3:.3f} | {n / syncs:.1f} |",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", metavar="LABEL=BROKER[;LOG LINES]")
    ap.add_argument("--count", type=int, default=300_000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--blast", default="target/release/mqtt-blast")
    args = ap.parse_args()
    builds = []
    for spec in args.builds:
        label, _, rest = spec.partition("=")
        binary, *lines = rest.split(";")
        builds.append((label, binary, "\n".join(line.strip() for line in lines)))
    print(f"QoS 1, {args.count} messages, {args.connections} connection(s) x {args.window} in flight, "
          f"fsync = always")
    print("| build | msg/s | fdatasyncs | mean fdatasync, ms | messages per fdatasync |")
    print("|---|---:|---:|---:|---:|")
    try:
        for _ in range(args.rounds):
            for label, binary, log_extra in builds:
                run(label, binary, log_extra, args)
    finally:
        for p in bb.procs:
            bb.stop(p)


if __name__ == "__main__":
    main()
