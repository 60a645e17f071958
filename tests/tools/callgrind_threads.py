"""Which of callgrind's per-thread files (`--separate-threads=yes`) is whose, for the ingest
tools (callgrind_mqtt_ingest.py, callgrind_nats_ingest.py): the log writer is the thread whose
file names `edge_log::writer::Writer::flush`; the tokio workers are the two busiest others.
The tools run callgrind with `--compress-strings=no`: otherwise a function is named only in the
first thread's file that calls it, and the writer's file may hold its number alone."""
import glob
import os
import re

WRITER_FN = "edge_log::writer::Writer::flush"


def split_threads(out):
    """(Ir of the two busiest non-writer threads, Ir of the writer thread or None)."""
    writer = None
    others = []
    for path in glob.glob(os.path.join(out, "cg.out-*")):
        text = open(path, errors="replace").read()
        ir = int(re.search(r"^summary: (\d+)", text, re.M).group(1))
        if writer is None and WRITER_FN in text:
            writer = ir
        else:
            others.append(ir)
    others.sort(reverse=True)
    return sum(others[:2]), writer


def report(out, n, unit):
    workers, writer = split_threads(out)
    print(f"tokio workers (the two busiest other threads): {workers / n:,.0f} Ir per {unit}")
    if writer is not None:
        print(f"the log writer: {writer / n:,.0f} Ir per {unit}")
