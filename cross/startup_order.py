#!/usr/bin/env python3
"""A linker script that links the functions a callgrind run executed first, for every target.

Usage: cross/startup_order.py CALLGRIND_OUT UNSTRIPPED_BINARY LINKER_SCRIPT

CALLGRIND_OUT as for cross/text_pages.py, recorded on UNSTRIPPED_BINARY (a release build with
CARGO_PROFILE_RELEASE_STRIP=false; cross/startup_profile.sh makes both and calls this script).
The script written lists those functions' input sections in the `.text` output section, placed
before `.plt` (`INSERT BEFORE`: the linker's default layout stays as it is, and every function
not listed follows them in `.text` as before), so the code run at start-up and idle lies
together and the kernel's fault-around (64 KiB windows around every code page fault) maps few
windows of text instead of most of them (BENCHMARKS.md "Footprint"). One `.text`, not a section
of its own: valgrind only reads symbols in `.text`, and this script is made from a valgrind run.

Why patterns and not a symbol-ordering file: zig cc, which links the glibc 2.28 gateway builds,
rejects `--symbol-ordering-file` but passes `-T SCRIPT` to lld; and a mangled name's hash differs
per target, profile and compiler. A Rust (legacy) mangled name is `_ZN<len><name>...17h<16 hex>E`:
the pattern keeps the path and replaces the hash with `?`s, so one checked-in script matches the
same functions in the x86_64, aarch64 and armv7 builds (every instance of a generic function at
once, unless that gathers more than a 64 KiB window of code that did not run); in a v0 name
(`_R...`) the crate disambiguators (`Cs<base62>_`) become `*`. A function that is gone or
renamed is not matched and is linked where it always was: a stale script costs RSS, never
correctness. Each function is matched in `.text.NAME` and, for
`#[cold]` ones, `.text.unlikely.NAME` (rustc's `-Z function-sections`, on by default on ELF).
Symbols with a `.llvm.N` suffix are matched without it. LTO renames a local function that
collides with another by appending `.N` (`box_new_uninit.2981`), and N changes with every code
change elsewhere: such a function is matched with and without any `.N` (`NAME.[0-9]*`), or the
script goes stale at the next commit. ring's version prefix (`ring_core_0_17_14_`) becomes `*`. Assembly has no function sections: the few assembly
objects the run executed are matched by archive member (ASSEMBLY); other executed functions
outside function sections are printed, to be added there.
"""
import bisect
import collections
import os
import re
import subprocess
import sys

# The kernel's fault-around: the text mapped around each code page fault (fault_around_bytes).
WINDOW = 64 * 1024
# `17h` + 16 hex digits + `E`: the hash part of a legacy Rust mangled name.
HASH = re.compile(r"17h[0-9a-f]{16}E")
# `Cs<base62>_`: a crate's disambiguator in a v0 mangled name (`_R...`; Debian's std has some),
# which differs per target like the legacy hash.
CRATE = re.compile(r"Cs[0-9A-Za-z]+_")
# ring's C symbols carry its version.
RING = re.compile(r"^ring_core_[0-9_]+?__")
# Executed assembly functions (ring's; rustc bundles its static library into libring-*.rlib) ->
# the archive members that hold them, for every target (sha256-x86_64-elf.o, sha256-armv8-linux64.o, sha256-armv4-linux32.o).
# Start-up runs them: `auth::Auth::new` derives a PBKDF2 hash.
ASSEMBLY = {
    "sha256_block_data_order": "*ring*:*-sha256-*.o(.text)",
    "sha512_block_data_order": "*ring*:*-sha512-*.o(.text)",
}
# `.N`: LTO's suffix of a renamed local function (differs from build to build).
LOCAL = re.compile(r"\.[0-9]+$")
# Characters lld accepts in an unquoted pattern (a quoted one is not a glob), minus the glob ones.
PLAIN = re.compile(r"^[A-Za-z0-9_.$]+$")


def pattern(symbol):
    """The hash-free input-section name pattern of one function symbol, or None; `sections`
    turns it into the input-section patterns of the linker script.

    >>> pattern("_ZN5bytes9bytes_mut8BytesMut6freeze17h0123456789abcdefE.2755")
    '_ZN5bytes9bytes_mut8BytesMut6freeze17h????????????????E'
    >>> pattern("_RNvNtCs1a2B_5alloc5boxed14box_new_uninit.2981")
    '_RNvNtCs*_5alloc5boxed14box_new_uninit'
    >>> pattern("ring_core_0_17_14__OPENSSL_cpuid_setup")
    'ring_core_*__OPENSSL_cpuid_setup'
    """
    name = LOCAL.sub("", symbol.split(".llvm.", 1)[0])
    if not PLAIN.match(name):
        return None
    if name.startswith("_R"):
        return CRATE.sub("Cs*_", name)
    if name.startswith("_ZN"):
        return HASH.sub("17h" + "?" * 16 + "E", name)
    return RING.sub("ring_core_*__", name)


def sections(p):
    """The input sections of a pattern: `.text.NAME` and, for `#[cold]` functions,
    `.text.unlikely.NAME`, each also with LTO's `.N` (any N: it changes with unrelated code).

    >>> sections("_RNvNtCs*_5alloc5boxed14box_new_uninit")
    '*(.text._RNvNtCs*_5alloc5boxed14box_new_uninit .text._RNvNtCs*_5alloc5boxed14box_new_uninit.[0-9]* .text.unlikely._RNvNtCs*_5alloc5boxed14box_new_uninit .text.unlikely._RNvNtCs*_5alloc5boxed14box_new_uninit.[0-9]*)'
    """
    return f"*(.text.{p} .text.{p}.[0-9]* .text.unlikely.{p} .text.unlikely.{p}.[0-9]*)"


def assembly(symbol):
    """The archive-member pattern of an executed assembly function, or None."""
    if symbol.startswith(("_ZN", "_R")):
        return None
    return next((m for stem, m in ASSEMBLY.items() if stem in symbol), None)


def executed_functions(profile, binary):
    """Function symbols of BINARY in the order the run first executed them, and the size of
    every function symbol of BINARY."""
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
    if not order:
        sys.exit("startup_order: no function of the binary in the profile (--dump-instr=yes "
                 "--compress-pos=no --compress-strings=no?)")
    sizes = collections.Counter()
    for _, size, sym in syms:
        sizes[sym] += size
    return order, sizes


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    profile, binary, out = sys.argv[1:]
    order, sizes = executed_functions(profile, binary)
    # A pattern matches every instance of a generic function. One that would gather more than a
    # fault-around window of code that did not run is left out: leaving its executed instances
    # where they are costs at most a window each, which they usually share.
    matched, ran = collections.Counter(), collections.Counter()
    for sym, size in sizes.items():
        p = pattern(sym)
        if p is not None:
            matched[p] += size
    for sym in order:
        p = pattern(sym)
        if p is not None:
            ran[p] += sizes[sym]
    patterns, members, wasteful = [], [], []
    for sym in order:
        m = assembly(sym)
        p = pattern(sym)
        if m is not None:
            if m not in members:
                members.append(m)
        elif p is None or p in patterns or p in wasteful:
            continue
        elif matched[p] - ran[p] > WINDOW:
            wasteful.append(p)
        else:
            patterns.append(p)
    lines = [
        "/* Generated by cross/startup_order.py from a callgrind run of the idle broker",
        "   (cross/startup_profile.sh): the functions that start-up, listener probes, one quiet",
        "   MQTT and one quiet NATS client, a /metrics scrape, idle and shutdown executed, first",
        "   run first, hashes replaced by ?. Linked first in .text so that fault-around maps few",
        "   64 KiB windows of text (BENCHMARKS.md \"Footprint\"). Regenerate, do not edit. */",
        "SECTIONS",
        "{",
        "  .text :",
        "  {",
    ]
    lines += [f"    {sections(p)}" for p in patterns]
    lines += [f"    {m}" for m in members]
    lines += ["  }", "}", "INSERT BEFORE .plt;", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"{len(order)} functions ({sum(sizes[s] for s in order) // 1024} KiB) ran; "
          f"{len(patterns)} patterns gather {sum(matched[p] for p in patterns) // 1024} KiB, "
          f"{len(members)} assembly objects -> {out}")
    for p in wasteful:
        print(f"left out: {p} (matches {matched[p] // 1024} KiB, {ran[p] // 1024} KiB ran)")
    plain = [s for s in order if not s.startswith(("_ZN", "_R")) and assembly(s) is None]
    if plain:
        print("not Rust, matched only if in a function section (C) - assembly needs ASSEMBLY:",
              " ".join(plain))


if __name__ == "__main__":
    main()
