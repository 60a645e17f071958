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
rejects `--symbol-ordering-file` but passes `-T SCRIPT` to lld; and a mangled name differs per
target, profile and compiler. cross/build.sh asks for v0 names (`_R...`), which spell out a
generic function's type arguments: the pattern keeps the path and those arguments and turns the
parts that differ between builds into `*` (crate disambiguators, back-references and the
instantiating crate: `V0Glob`), so one checked-in script matches the instances that ran, and
only those, in the x86_64, aarch64 and armv7 builds. (Legacy names, `_ZN...17h<16 hex>E`, differ
between a generic function's instances only in the hash: their pattern, hash replaced by `?`s,
gathers every instance at once, ~0.47 MiB of code that never ran in the last legacy script;
BENCHMARKS.md "v0 symbol names".) A function that is gone or renamed is not matched and is linked
where it always was: a stale script costs RSS, never correctness. Each function is matched in
`.text.NAME` and, for `#[cold]` ones, `.text.unlikely.NAME` (rustc's `-Z function-sections`, on
by default on ELF). Symbols with a `.llvm.N` suffix are matched without it. LTO renames a local
function that collides with another by appending `.N` (`box_new_uninit.2981`), and N changes with
every code change elsewhere: such a function is matched with and without any `.N`
(`NAME.[0-9]*`), or the script goes stale at the next commit. ring's version prefix
(`ring_core_0_17_14_`) becomes `*`. Assembly has no function sections: the few assembly objects
the run executed are matched by archive member (ASSEMBLY); other executed functions outside
function sections are printed, to be added there.
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
# `Cs<base62>_`: a crate's disambiguator in a v0 mangled name, which differs per target like the
# legacy hash (the fallback for a name `V0Glob` cannot read).
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


BASE62 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class V0Glob:
    """A v0 mangled name (`_R...`, RFC 2603) as a glob that matches the same function in every
    build of every target:

    - a crate's disambiguator, `Cs<base62>_` (a hash of the crate's metadata: it differs per
      target, profile and compiler) -> `Cs*_`;
    - a back-reference, `B<base62>_` (the byte offset of an earlier path in the name: it moves
      when a disambiguator before it is one character shorter, as about 1 in 12 are) -> `B*_`;
    - the instantiating crate that ends a generic instance's name (the crate whose code
      generation made the copy) -> `*`.

    Everything else is kept: the path, the impl and closure disambiguators, and a generic
    function's type arguments, which tell its instances apart. `glob` raises ValueError on a
    name outside the grammar; `pattern` then falls back to replacing disambiguators alone.

    >>> V0Glob("_RNvMs5_NtCs1a2B3c_3std4timeNtB5_10SystemTime3now").glob()
    '_RNvMs5_NtCs*_3std4timeNtB*_10SystemTime3now'
    >>> V0Glob("_RINvNtCs1a_4core3mem4dropNtCs2b_3foo3BarECs3c_3app").glob()
    '_RINvNtCs*_4core3mem4dropNtCs*_3foo3BarE*'
    >>> V0Glob("_RNCNvNtCs1a_3app3run0s0_0").glob()   # closures: empty names, s0_ disambiguator
    '_RNCNvNtCs*_3app3run0s0_0'
    """

    def __init__(self, name):
        self.name, self.at, self.out = name, 0, []

    def glob(self):
        self.keep(2)  # _R
        if self.peek().isdigit():
            self.decimal()  # encoding version
        self.path()
        if self.at < len(self.name):
            mark = len(self.out)
            self.path()  # the instantiating crate
            self.out[mark:] = ["*"]
        if self.at != len(self.name):
            raise ValueError(f"{self.name}: trailing characters at {self.at}")
        return "".join(self.out)

    def peek(self):
        return self.name[self.at] if self.at < len(self.name) else ""

    def keep(self, n=1):
        if self.at + n > len(self.name):
            raise ValueError(f"{self.name}: ends early")
        self.out.append(self.name[self.at:self.at + n])
        self.at += n

    def accept(self, c):
        if self.peek() == c:
            self.keep()
            return True
        return False

    def base62(self, glob=False):
        start = self.at
        while self.peek() in BASE62 and self.peek():
            self.at += 1
        if self.peek() != "_":
            raise ValueError(f"{self.name}: no base-62 number at {start}")
        self.at += 1
        self.out.append("*_" if glob else self.name[start:self.at])

    def decimal(self):
        start = self.at
        if self.peek() == "0":
            self.at += 1
        else:
            while self.peek().isdigit() and self.peek():
                self.at += 1
        if self.at == start:
            raise ValueError(f"{self.name}: no number at {start}")
        self.out.append(self.name[start:self.at])
        return int(self.name[start:self.at])

    def backref(self):
        self.keep()  # B
        self.base62(glob=True)

    def identifier(self, crate=False):
        if self.accept("s"):
            self.base62(glob=crate)
        self.bare_identifier()

    def bare_identifier(self):
        """`["u"] decimal ["_"] bytes`: a name without its disambiguator."""
        self.accept("u")
        n = self.decimal()
        self.accept("_")
        self.keep(n)

    def path(self):
        c = self.peek()
        if c == "B":
            self.backref()
            return
        self.keep()
        if c == "C":
            self.identifier(crate=True)
        elif c == "M":
            self.impl_path()
            self.type()
        elif c == "X":
            self.impl_path()
            self.type()
            self.path()
        elif c == "Y":
            self.type()
            self.path()
        elif c == "N":
            self.keep()  # namespace
            self.path()
            self.identifier()
        elif c == "I":
            self.path()
            while not self.accept("E"):
                self.generic_arg()
        else:
            raise ValueError(f"{self.name}: no path at {self.at - 1}")

    def impl_path(self):
        if self.accept("s"):
            self.base62()
        self.path()

    def generic_arg(self):
        if self.accept("L"):
            self.base62()
        elif self.accept("K"):
            self.const()
        else:
            self.type()

    def const(self):
        if self.accept("p"):
            return
        if self.peek() == "B":
            self.backref()
            return
        self.type()
        self.accept("n")
        while not self.accept("_"):
            if not self.peek() or self.peek() not in "0123456789abcdef":
                raise ValueError(f"{self.name}: no constant at {self.at}")
            self.keep()

    def type(self):
        c = self.peek()
        if c and c.islower():
            self.keep()  # a basic type
        elif c in ("B", "C", "M", "X", "Y", "N", "I"):
            self.path()
        elif c == "A":
            self.keep(); self.type(); self.const()
        elif c in ("S", "P", "O"):
            self.keep(); self.type()
        elif c in ("R", "Q"):
            self.keep()
            if self.accept("L"):
                self.base62()
            self.type()
        elif c == "T":
            self.keep()
            while not self.accept("E"):
                self.type()
        elif c == "F":
            self.keep()
            self.binder()
            self.accept("U")
            if self.accept("K") and not self.accept("C"):
                self.bare_identifier()  # the ABI
            while not self.accept("E"):
                self.type()
            self.type()
        elif c == "D":
            self.keep()
            self.binder()
            while not self.accept("E"):
                self.path()
                while self.accept("p"):
                    self.bare_identifier()  # an associated type's binding
                    self.type()
            self.keep()  # L
            self.base62()
        else:
            raise ValueError(f"{self.name}: no type at {self.at}")

    def binder(self):
        if self.accept("G"):
            self.base62()


def pattern(symbol):
    """The target-free input-section name pattern of one function symbol, or None; `sections`
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
        try:
            return V0Glob(name).glob()
        except ValueError:
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
        "   run first, names made target-free by globs. Linked first in .text so that fault-around maps few",
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
