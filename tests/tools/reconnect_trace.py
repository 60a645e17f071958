#!/usr/bin/env python3
"""What edge-broker does between Kafka accepting connections again and its first produce, by
strace: stages bench_bridge.py's drain (edge-broker started with Kafka down, mqtt-blast fills
its log with --backlog records, the forwarder backing off), attaches
`strace -f -ttt` (connect, sendto, sendmsg, recvfrom, write, writev, shutdown) to edge-broker,
starts Tansu and detaches once the forwarded counter reaches the backlog. Prints the wall-clock
times of Tansu's spawn and of the bench's "Kafka is up" (its port seen open) to read the trace
(--out) against: the probes (connect + ApiVersions), Metadata, InitProducerId, the produce
connections and the first Produce requests.

  .venv/bin/python tests/tools/reconnect_trace.py --broker target/release/edge-broker \
      --blast target/release/mqtt-blast --backlog 100000 --out /tmp/reconnect.strace
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--blast", required=True)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--out", required=True, help="strace output file")
    args = ap.parse_args()
    bb.BLAST = args.blast
    tmp = tempfile.mkdtemp(prefix="reconnect-trace-")
    log = open(os.path.join(tmp, "peers.log"), "w")
    print(f"peers' output: {tmp}/peers.log", flush=True)
    try:
        kport = bb.free_port()
        mport, xport = bb.free_port(), bb.free_port()
        eb = bb.edge_broker(args.broker, os.path.join(tmp, "data"), mport, xport,
                            f"127.0.0.1:{kport}", log, "always")
        _, n = bb.publish(mport, args.backlog, 200, 2)
        time.sleep(1.0)  # the backoff grows while Kafka stays down
        st = subprocess.Popen(["strace", "-f", "-ttt", "-e",
                               "trace=connect,sendto,sendmsg,recvfrom,write,writev,shutdown",
                               "-o", args.out, "-p", str(eb.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached
        spawned = time.time()
        bb.tansu(kport, log, settle=0)
        up = time.time()
        t_first, _, _ = bb.wait_forwarded(xport, n)
        first = time.time() - (time.perf_counter() - t_first)
        st.terminate()
        st.wait()
        print(f"Tansu spawned at {spawned:.6f}; its port seen open (the bench's 'Kafka is up') "
              f"+{up - spawned:.3f} s; forwarded counter first above zero +{first - spawned:.3f} s "
              f"(strace slows edge-broker down)")
    finally:
        for p in bb.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
