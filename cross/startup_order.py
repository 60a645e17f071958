#!/usr/bin/env python3
"""A linker symbol-ordering file from a callgrind run: the functions the run executed, first first.

Usage: cross/startup_order.py CALLGRIND_OUT UNSTRIPPED_BINARY ORDER_FILE

CALLGRIND_OUT as for cross/text_pages.py, recorded on UNSTRIPPED_BINARY (a release build with
CARGO_PROFILE_RELEASE_STRIP=false). Relinking the same build with lld and
`-C link-arg=-Wl,--symbol-ordering-file=ORDER_FILE` puts the code run at start-up and idle
together, so fault-around maps fewer 64 KiB windows of text (BENCHMARKS.md "Footprint": idle
RSS 7.6 -> 5.5 MiB on x86_64). Symbols are mangled names of that exact build: the file is only
valid for the build it was made from.
"""
import bisect
import os
import subprocess
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    profile, binary, out = sys.argv[1:]
    nm = subprocess.run(["nm", "-n", "-S", "--defined-only", binary], check=True,
                        capture_output=True, text=True).stdout
    syms = sorted((int(p[0], 16), int(p[1], 16), p[3])
                  for p in (line.split() for line in nm.splitlines())
                  if len(p) == 4 and p[2] in "tTwW")
    if not syms:
        sys.exit(f"startup_order: {binary} has no function symbols (stripped?)")
    starts = [s[0] for s in syms]
    name = os.path.basename(binary)
    obj, order, seen = None, [], set()
    with open(profile) as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("0x") and obj is not None and os.path.basename(obj) == name:
                addr = int(line.split()[0], 16)
                i = bisect.bisect_right(starts, addr) - 1
                if i >= 0 and addr < syms[i][0] + max(syms[i][1], 1) and syms[i][2] not in seen:
                    seen.add(syms[i][2])
                    order.append(syms[i][2])
    with open(out, "w") as f:
        f.write("".join(s + "\n" for s in order))
    size = sum(s[1] for s in syms if s[2] in seen)
    print(f"{len(order)} functions ({size // 1024} KiB) -> {out}")


if __name__ == "__main__":
    main()
