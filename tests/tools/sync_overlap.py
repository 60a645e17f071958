#!/usr/bin/env python3
"""Whether fdatasyncs overlap on this disk: T threads, each with its own open file description
of one pre-written file, append 4 KiB at the next free position and fdatasync, in a loop.
Prints syncs per second and each sync's p50/p99 per thread count, counts alternating.

A syncer with several syncs in flight (a record waiting for the next sync to *start*, not for
the running one to end) only pays if the disk runs them side by side: syncs per second rising
with T while each sync takes as long as alone. If they queue behind each other, each takes T
times as long and the rate stays put.

  python3 tests/tools/sync_overlap.py [--dir /var/lib/edge-broker] [--syncs 3000] [--threads 1,2,3]
      [--rounds 2]

Each thread has its own descriptor, as two syncer threads would need: on Linux a write-back
error is reported once per open file description, so two syncs through one descriptor could
see one failure between them and the other report success.
"""
import argparse
import os
import shutil
import tempfile
import threading
import time

FILE_BYTES = 64 << 20
BLOCK = 4096


def run(path, threads, syncs):
    """Runs `syncs` appends + fdatasyncs over `threads` threads; (rate, p50 s, p99 s)."""
    lock = threading.Lock()
    position = [0]
    latencies = []
    data = b"x" * BLOCK

    def worker(count):
        fd = os.open(path, os.O_RDWR)
        try:
            for _ in range(count):
                with lock:
                    at = position[0] % FILE_BYTES
                    position[0] += BLOCK
                start = time.perf_counter()
                os.pwrite(fd, data, at)
                os.fdatasync(fd)
                latencies.append(time.perf_counter() - start)
        finally:
            os.close(fd)

    workers = [threading.Thread(target=worker, args=(syncs // threads,)) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2],
            latencies[int(len(latencies) * 0.99)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=tempfile.gettempdir(),
                    help="a directory on the file system to measure")
    ap.add_argument("--syncs", type=int, default=3000)
    ap.add_argument("--threads", default="1,2,3")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir=args.dir)
    try:
        path = os.path.join(work, "overlap")
        # Written and synced first: appends land in allocated blocks (no metadata per sync),
        # as in the log's preallocated segments.
        with open(path, "wb") as f:
            f.write(b"\0" * FILE_BYTES)
            f.flush()
            os.fsync(f.fileno())
        print(f"{'round':>5} {'threads':>7} {'syncs/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
        for r in range(1, args.rounds + 1):
            for t in (int(x) for x in args.threads.split(",")):
                rate, p50, p99 = run(path, t, args.syncs)
                print(f"{r:>5} {t:>7} {rate:>9.0f} {p50 * 1e3:>7.3f} {p99 * 1e3:>7.3f}",
                      flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
