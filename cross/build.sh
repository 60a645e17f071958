#!/usr/bin/env bash
# Build release binaries of edge-broker for the gateway targets with Debian's Rust (no rustup).
#
# Usage: cross/build.sh [aarch64|armv7|x86_64|all]     (default: all = the three targets)
#
# Output: $CARGO_TARGET_DIR/<triple>/<profile>/edge-broker   (CARGO_TARGET_DIR defaults to <repo>/target)
#   aarch64 -> aarch64-unknown-linux-gnu        (Raspberry Pi 3/4/5, 64-bit OS)
#   armv7   -> armv7-unknown-linux-gnueabihf    (Raspberry Pi 2/3/4, 32-bit OS)
#   x86_64  -> x86_64-unknown-linux-gnu         (amd64 .deb; built by the same compiler)
# Exits non-zero if setup or any build fails, or a binary is not an ELF of the right machine.
# Ends with a table of stripped sizes.
#
# Why a --target build never collides with the host's rustup builds in the same target dir:
# they land in target/<triple>/..., host builds in target/{debug,release}. Build scripts and proc
# macros of a --target build do go to target/release/{build,deps}, but cargo's metadata hash
# includes the compiler version, so Debian's and rustup's artifacts live side by side.
#
# glibc: the binaries are linked against glibc 2.28 (EDGE_CROSS_GLIBC), so they run on
# Raspberry Pi OS buster (2.28), bullseye (2.31) and bookworm (2.36): cargo-zigbuild with zig as
# the linker and C compiler (for ring), target "<triple>.2.28", the same Rust std as before. The
# highest GLIBC_ symbol version each binary needs is checked after the build
# (cross/glibc-check.sh) and printed in the size table. EDGE_CROSS_GLIBC=native links with the
# Debian cross gcc instead (binaries then need glibc >= 2.34, bookworm).
#
# Start-up code first: the zig link gets `-T cross/startup.ld` (EDGE_CROSS_STARTUP_ORDER), a
# linker script that places the functions start-up and idle run at the start of .text, so the
# kernel's fault-around (64 KiB of text mapped around each code page fault) leaves ~2 MiB of
# text resident at idle instead of ~4 (BENCHMARKS.md "Footprint"). The script names functions by
# their v0 symbol names (-C symbol-mangling-version=v0, set below for the target crates) with the
# parts that differ per target made globs, so one file serves all three targets and names only
# the instances of generic functions that ran; cross/startup_profile.sh
# regenerates it. The size table shows how much code it gathered ("start-up code"): a stale
# script only gathers less. Passed with `cargo rustc` to the binary's link alone, so it does not
# rebuild the dependencies.
#
# On an arm64 host, aarch64 is built natively (cross/setup.sh explains; other targets need an
# amd64 machine).
#
# Environment:
#   CARGO_TARGET_DIR      target dir (default <repo>/target)
#   EDGE_BROKER_PROFILE   cargo profile (default release; release-small = opt-level "z")
#   EDGE_CROSS_GLIBC      oldest glibc to run on (default 2.28), or "native"
#   EDGE_CROSS_SKIP_SETUP=1  do not run cross/setup.sh (toolchain known to be present)
#   EDGE_CROSS_CARGO_ARGS extra arguments for cargo build (e.g. "--locked" or "--features x")
#   EDGE_CROSS_STARTUP_ORDER  linker script of the start-up code (default cross/startup.ld), or
#                         "none" for the linker's own order
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

die() { printf 'build: ERROR: %s\n' "$*" >&2; exit 1; }

# One target or all: a second one used to be ignored without a word (`build.sh aarch64 armv7`
# built aarch64 only and exited 0).
[ "$#" -le 1 ] || die "one target at a time, or all (got: $*)"
WANT="${1:-all}"
case "$WANT" in
  all) TARGETS=(aarch64 armv7 x86_64) ;;
  aarch64 | armv7 | x86_64) TARGETS=("$WANT") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown target '$WANT' (expected aarch64, armv7, x86_64 or all)" ;;
esac

PROFILE="${EDGE_BROKER_PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac

GLIBC="${EDGE_CROSS_GLIBC:-2.28}"
ORDER="${EDGE_CROSS_STARTUP_ORDER:-$HERE/startup.ld}"
case "$ORDER" in none | /*) ;; *) ORDER="$(pwd)/$ORDER" ;; esac
[ "$ORDER" = none ] || [ -r "$ORDER" ] || die "EDGE_CROSS_STARTUP_ORDER=$ORDER is not readable"
ZIG_VENV="${EDGE_CROSS_CACHE:-/var/cache/edge-broker-cross}/zig-venv"
HOST_ARCH="${EDGE_CROSS_HOST_ARCH:-$(dpkg --print-architecture 2>/dev/null || uname -m)}"

if [ "${EDGE_CROSS_SKIP_SETUP:-0}" != 1 ]; then
  "$HERE/setup.sh" "$WANT"
fi

if [ "$HOST_ARCH" = arm64 ] || [ "$HOST_ARCH" = aarch64 ]; then
  # Native build on an arm64 machine: only aarch64 (setup.sh refused anything else).
  (cd "$ROOT" && cargo build --profile "$PROFILE" --target aarch64-unknown-linux-gnu -p edge-broker --bin edge-broker)
  bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/$PROFILE/edge-broker"
  [ -x "$bin" ] || die "$bin was not produced"
  printf 'build: %s (native, needs glibc >= %s)\n' "$bin" "$("$HERE/glibc-check.sh" "$bin")"
  exit 0
fi

# pow_link_args TARGET : compiles musl's `pow` (MIT; the copy of musl's sources zig ships) for
# TARGET and prints the -C link-arg options that link it. Why: libm.so costs ~0.5 MB of idle RSS
# (mapped, its IFUNCs resolved, its symbol tables searched) and the broker needs one function of
# it: tokio's multi-thread scheduler calls `pow` (f64::powf) after every batch. (The $SYS load
# averages' e^x is our own, edge-broker/src/mqtt/sys.rs.) An object's definition wins over a
# shared library's, and rustc links with --as-needed, so libm.so is then left out; the size table
# says whether it was.
pow_link_args() {
  local t="$1" zig_target cpu=() musl dir zig_version
  case "$t" in
    aarch64) zig_target=aarch64-linux-musl ;;
    armv7) zig_target=arm-linux-musleabihf; cpu=(-mcpu=generic+v7a+vfp3-d32+thumb2-neon) ;; # as cargo-zigbuild
    x86_64) zig_target=x86_64-linux-musl ;;
  esac
  musl="$("$ZIG_VENV/bin/python" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')/lib/libc/musl"
  [ -r "$musl/src/math/pow.c" ] || die "musl's pow.c not found in zig ($musl)"
  # Named by zig's version: cargo relinks when the arguments change, not the objects.
  zig_version="$("$ZIG_VENV/bin/python" -m ziglang version)"
  dir="$CARGO_TARGET_DIR/musl-pow-$zig_version/$t"
  mkdir -p "$dir"
  local f
  for f in pow pow_data exp_data __math_oflow __math_uflow __math_xflow __math_invalid __math_divzero; do
    [ -s "$dir/$f.o" ] || "$ZIG_VENV/bin/python" -m ziglang cc -target "$zig_target" "${cpu[@]}" \
      -O2 -fPIC -fvisibility=hidden -w -I"$musl/src/include" -I"$musl/src/internal" \
      -I"$musl/arch/${zig_target%%-*}" -I"$musl/arch/generic" -I"$musl/include" \
      -c "$musl/src/math/$f.c" -o "$dir/$f.o" >&2 || die "compiling musl's $f.c for $t failed"
    printf -- '-C\nlink-arg=%s\n' "$dir/$f.o"
  done
}

triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; x86_64) echo x86_64-unknown-linux-gnu ;; esac; }
# GNU toolchain prefix for the target ("" = the host's gcc/binutils)
prefix_of() { case "$1" in aarch64) echo aarch64-linux-gnu- ;; armv7) echo arm-linux-gnueabihf- ;; x86_64) echo "" ;; esac; }
# ELF e_machine as printed by readelf -h
machine_of() { case "$1" in aarch64) echo AArch64 ;; armv7) echo ARM ;; x86_64) echo 'X86-64' ;; esac; }

build_one() { # build_one TARGET
  local t="$1" triple prefix upper lower
  triple="$(triple_of "$t")"; prefix="$(prefix_of "$t")"
  upper="$(echo "$triple" | tr 'a-z-' 'A-Z_')"; lower="${triple//-/_}"
  printf 'build: %s (%s, profile %s) -> %s\n' "$t" "$triple" "$PROFILE" "$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker" >&2
  # Debian's cargo + rustc: rustup's ~/.cargo/bin comes first on PATH, and /usr/bin/cargo would
  # otherwise pick up rustup's rustc (which has no ARM std here) and fail to link.
  # Linker/CC/AR only for the ARM targets: for x86_64 (= the host) they would also apply to the
  # build scripts and proc macros shared by all three builds, so each switch between x86_64 and
  # an ARM target would rebuild everything. The host defaults (cc, ar) are what x86_64 needs.
  local cross_env=()
  if [ "$GLIBC" != native ]; then
    # zig links against the glibc version named in the target and compiles ring's C for it;
    # Debian's cargo and rustc stay in charge (/usr/bin ahead of rustup's ~/.cargo/bin).
    [ -x "$ZIG_VENV/bin/cargo-zigbuild" ] || die "cargo-zigbuild missing in $ZIG_VENV (run cross/setup.sh)"
    # zig cc passes `-T` on to lld (it rejects --symbol-ordering-file). Cargo does not track the
    # script's content, only the arguments: a copy named by its hash relinks when it changes.
    local link_args=() script
    if [ "$ORDER" != none ]; then
      script="$CARGO_TARGET_DIR/startup-$(sha256sum "$ORDER" | cut -c1-16).ld"
      mkdir -p "$CARGO_TARGET_DIR"; cp "$ORDER" "$script"
      link_args=(-C "link-arg=-Wl,-T,$script")
    fi
    local pow_args
    mapfile -t pow_args < <(pow_link_args "$t")
    [ "${#pow_args[@]}" -eq 16 ] || die "musl's pow: ${#pow_args[@]} of 16 link arguments for $t"
    link_args=(-- "${link_args[@]}" "${pow_args[@]}")
    # v0 symbol names spell out a generic function's type arguments (legacy names differ only in
    # a hash), so cross/startup.ld names the instances start-up ran and leaves the others out.
    # Target crates only: build scripts and proc macros are not rebuilt for it.
    # shellcheck disable=SC2086
    (cd "$ROOT" && env PATH="$ZIG_VENV/bin:/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
      "CARGO_TARGET_${upper}_RUSTFLAGS=-C symbol-mangling-version=v0" \
      CARGO=/usr/bin/cargo cargo-zigbuild rustc --profile "$PROFILE" --target "$triple.$GLIBC" \
        -p edge-broker --bin edge-broker ${EDGE_CROSS_CARGO_ARGS:-} "${link_args[@]}")
  else
    if [ -n "$prefix" ]; then
      cross_env=("CARGO_TARGET_${upper}_LINKER=${prefix}gcc" "CC_${lower}=${prefix}gcc" "AR_${lower}=${prefix}ar")
    fi
    # shellcheck disable=SC2086
    (cd "$ROOT" && env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc "${cross_env[@]}" \
      /usr/bin/cargo build --profile "$PROFILE" --target "$triple" -p edge-broker --bin edge-broker \
        ${EDGE_CROSS_CARGO_ARGS:-})
  fi
  local bin="$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker"
  [ -x "$bin" ] || die "$bin was not produced"
  "${prefix}readelf" -h "$bin" | grep -q "Machine:.*$(machine_of "$t")" \
    || die "$bin is not an ELF for $(machine_of "$t")"
  if [ "$GLIBC" != native ]; then
    "$HERE/glibc-check.sh" "$bin" "$GLIBC" >/dev/null || die "$bin needs a newer glibc than $GLIBC"
    if [ "$ORDER" != none ] && [ "$(startup_kib "$t" "$bin")" -lt 256 ]; then
      die "$bin: $ORDER gathered less than 256 KiB of start-up code (ignored by the linker, or stale: cross/startup_profile.sh)"
    fi
  fi
}

# startup_kib TARGET BINARY : KiB of code linked before _start, the first function of .text that
# cross/startup.ld does not name (crt1.o's); 0 when the script was not used.
startup_kib() {
  local prefix text entry
  prefix="$(prefix_of "$1")"
  text="$("${prefix}readelf" -SW "$2" | awk '{ sub(/^ *\[ *[0-9]+\] */, "") } $1 == ".text" { print $3 }')"
  entry="$("${prefix}readelf" -hW "$2" | awk '/Entry point address:/ { print $4 }')"
  [ -n "$text" ] && [ -n "$entry" ] || die "$2: no .text or entry point"
  echo $(( ((entry & ~1) - 0x$text) / 1024 ))
}

for t in "${TARGETS[@]}"; do build_one "$t"; done

# Stripped size: the release profile already strips; strip a copy anyway so the number stays the
# stripped one if a profile (e.g. bench) keeps symbols.
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
printf '\n%-32s %12s %14s %6s %14s %5s  %s\n' "target" "bytes" "stripped bytes" "glibc" "start-up code" "libm" "binary"
for t in "${TARGETS[@]}"; do
  triple="$(triple_of "$t")"; prefix="$(prefix_of "$t")"
  bin="$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker"
  "${prefix}strip" -o "$tmp/$t" "$bin"
  libm=no; "${prefix}readelf" -d "$bin" | grep -q 'NEEDED.*\[libm\.so' && libm=yes
  printf '%-32s %12s %14s %6s %10s KiB %5s  %s\n' "$triple" "$(stat -c %s "$bin")" "$(stat -c %s "$tmp/$t")" \
    "$("$HERE/glibc-check.sh" "$bin")" "$(startup_kib "$t" "$bin")" "$libm" "$bin"
done
