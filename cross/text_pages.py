#!/usr/bin/env python3
"""Which pages of a binary's code a run executed, from a callgrind profile.

Usage:
  valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \\
      --callgrind-out-file=cg.out BINARY ARGS...     # run, then stop it (SIGTERM)
  cross/text_pages.py cg.out BINARY

Prints the executable segment's size, how many distinct instructions ran in it, on how many
4 KiB pages and in how many 64 KiB windows they lie. An idle process's resident text is about
the windows (the kernel's fault-around maps the 64 KiB around each faulting page), not the
pages, so the gap between the two is what ordering the code run at startup together would save.
"""
import subprocess
import sys


def text_range(binary):
    out = subprocess.run(["readelf", "-lW", binary], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["LOAD"] and "E" in parts[6:-1]:
            start, size = int(parts[2], 16), int(parts[5], 16)
            return start, start + size
    sys.exit(f"text_pages: no executable LOAD segment in {binary}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    profile, binary = sys.argv[1], sys.argv[2]
    lo, hi = text_range(binary)
    obj, addrs = None, set()
    with open(profile) as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("0x") and obj is not None and obj.endswith(binary.rsplit("/", 1)[-1]):
                addr = int(line.split()[0], 16)
                if lo <= addr < hi:
                    addrs.add(addr)
    if not addrs:
        sys.exit("text_pages: no instruction of the binary in the profile (--dump-instr=yes "
                 "--compress-pos=no --compress-strings=no?)")
    pages = {a >> 12 for a in addrs}
    windows = {a >> 16 for a in addrs}
    print(f"text segment: {(hi - lo) // 1024} KiB in {(hi >> 16) - (lo >> 16) + 1} windows of 64 KiB")
    print(f"distinct instructions run: {len(addrs)} (~{len(addrs) * 9 // 2 // 1024} KiB at ~4.5 bytes each)")
    print(f"on {len(pages)} pages of 4 KiB = {len(pages) * 4} KiB")
    print(f"in {len(windows)} windows of 64 KiB = {len(windows) * 64} KiB (what fault-around maps)")


if __name__ == "__main__":
    main()
