#!/usr/bin/env python3
"""Instructions edge-broker spends per forwarded record while draining a Kafka backlog,
counted by valgrind's callgrind (this VM has no hardware counters for `perf stat`).

Stages it like bench_bridge.py's drain: edge-broker runs (natively) with Kafka down while
mqtt-blast fills its log with --backlog records; it is stopped and started again on the same
data directory under `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`
with Kafka still down; once it is up, instrumentation is switched on (`callgrind_control -i on`),
Tansu is started, and switched off when the forwarded counter reaches the
backlog. Prints the total instructions (Ir) per record and writes the callgrind output files
(one per thread) to --out, for `callgrind_annotate`.

  .venv/bin/python tests/tools/callgrind_drain.py --broker target/release/edge-broker \
      --blast target/release/mqtt-blast --backlog 200000 --out /tmp/cg-drain
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402


def total_ir(out_dir):
    """Sum of the `totals:`/`summary:` Ir lines of every callgrind output file in out_dir."""
    total = 0
    per_file = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "callgrind.out*"))):
        with open(path, errors="replace") as f:
            value = 0
            for line in f:
                m = re.match(r"^(?:totals|summary):\s+(\d+)", line)
                if m:
                    value = int(m.group(1))
        per_file[os.path.basename(path)] = value
        total += value
    return total, per_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--blast", required=True)
    ap.add_argument("--backlog", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--fsync", default="always")
    ap.add_argument("--compression", default="lz4")
    ap.add_argument("--out", required=True, help="directory for the callgrind output files")
    args = ap.parse_args()
    bb.BLAST = args.blast
    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, "callgrind.out*")):
        os.remove(old)
    tmp = tempfile.mkdtemp(prefix="cg-drain-")
    log = open(os.path.join(tmp, "driver.log"), "w")
    print(f"peers' output: {tmp}/driver.log", flush=True)
    try:
        kport = bb.free_port()
        bootstrap = f"127.0.0.1:{kport}"
        mport, xport = bb.free_port(), bb.free_port()
        data = os.path.join(tmp, "data")
        eb = bb.edge_broker(args.broker, data, mport, xport, bootstrap, log, args.fsync,
                            args.compression)
        _, n = bb.publish(mport, args.backlog, args.size, args.publishers)
        bb.stop(eb)
        cfg = os.path.join(data, "edge-broker.toml")
        cg = bb.spawn(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       "--separate-threads=yes",
                       f"--callgrind-out-file={args.out}/callgrind.out.%p",
                       args.broker, "--config", cfg], stdout=log, stderr=log,
                      env={**os.environ, "RUST_LOG": "warn"})
        bb.wait_port(xport, timeout=300)
        bb.wait_port(mport, timeout=300)
        subprocess.run(["callgrind_control", "-i", "on", str(cg.pid)], check=True,
                       stdout=log, stderr=log)
        k = bb.tansu(kport, log, settle=0)
        start = time.perf_counter()
        bb.wait_forwarded(xport, n, timeout=3600)
        took = time.perf_counter() - start
        subprocess.run(["callgrind_control", "-i", "off", str(cg.pid)], check=True,
                       stdout=log, stderr=log)
        bb.stop(cg)
        bb.stop(k)
    finally:
        for p in bb.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        # The backlog's segments: only the peers' output is kept.
        shutil.rmtree(os.path.join(tmp, "data"), ignore_errors=True)
    total, per_file = total_ir(args.out)
    print(f"records {n}, drain under callgrind {took:.1f} s")
    for name, value in per_file.items():
        print(f"  {name:<40} {value:>15,} Ir  {value / n:>10,.0f} Ir/record")
    print(f"total {total:,} Ir, {total / n:,.0f} Ir per forwarded record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
