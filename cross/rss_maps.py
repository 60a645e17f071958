#!/usr/bin/env python3
"""Resident memory of a process by mapping, as a Markdown table (KiB).

Usage: cross/rss_maps.py PID [IDLE_SECS]

Groups /proc/PID/smaps by file (the process's own binary, each library) and kind (text r-x,
read-only r--, data rw-; anonymous memory; [heap]; [stack]) and prints Size, Rss, Pss,
Private_Dirty and "used idle": the pages referenced during IDLE_SECS (default 10) after
/proc/PID/clear_refs reset the accessed bits. Rss minus "used idle" is what startup left
mapped: the kernel maps file pages in 64 KiB windows (fault-around) around each page fault, so
code run once stays resident until memory is short. For shared libraries "used idle" also counts
pages other processes touched (the page's own referenced flag is shared); for the binary and
anonymous memory it is this process's. Run as the process's owner (clear_refs).
"""
import collections
import os
import sys
import time

FIELDS = ("Rss", "Pss", "Private_Dirty", "Referenced")


def read(pid, exe):
    groups = collections.OrderedDict()
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                perms, name = parts[1], (parts[5] if len(parts) >= 6 else "")
                if name == exe:
                    key = f"binary {perms[:3]}"
                elif name.startswith("/"):
                    key = f"{os.path.basename(name)} {perms[:3]}"
                elif name.startswith("[stack"):
                    key = "[stack]"
                else:
                    key = name or "anonymous (thread stacks, malloc arenas)"
                cur = groups.setdefault(key, collections.Counter())
                start, end = (int(x, 16) for x in parts[0].split("-"))
                cur["Size"] += (end - start) // 1024
            elif cur is not None and parts and parts[0].rstrip(":") in FIELDS:
                cur[parts[0].rstrip(":")] += int(parts[1])
    return groups


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    pid = sys.argv[1]
    idle = float(sys.argv[2]) if len(sys.argv) == 3 else 10.0
    exe = os.readlink(f"/proc/{pid}/exe")
    before = read(pid, exe)
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("1")
    time.sleep(idle)
    after = read(pid, exe)
    print(f"\n| mapping | size | Rss | Pss | private dirty | used in {idle:g} s idle |")
    print("|---|---:|---:|---:|---:|---:|")
    total = collections.Counter()
    for key, c in before.items():
        if c["Rss"] == 0:
            continue
        used = after.get(key, collections.Counter())["Referenced"]
        total.update(c)
        total["used"] += used
        print(f"| {key} | {c['Size']} | {c['Rss']} | {c['Pss']} | {c['Private_Dirty']} | {used} |")
    print(f"| **total** | {total['Size']} | **{total['Rss']}** | {total['Pss']} | "
          f"{total['Private_Dirty']} | {total['used']} |")


if __name__ == "__main__":
    main()
