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
# Environment:
#   CARGO_TARGET_DIR      target dir (default <repo>/target)
#   EDGE_BROKER_PROFILE   cargo profile (default release; release-small = opt-level "z")
#   EDGE_CROSS_SKIP_SETUP=1  do not run cross/setup.sh (toolchain known to be present)
#   EDGE_CROSS_CARGO_ARGS extra arguments for cargo build (e.g. "--locked" or "--features x")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

die() { printf 'build: ERROR: %s\n' "$*" >&2; exit 1; }

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

if [ "${EDGE_CROSS_SKIP_SETUP:-0}" != 1 ]; then
  "$HERE/setup.sh" "$WANT"
fi

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
  if [ -n "$prefix" ]; then
    cross_env=("CARGO_TARGET_${upper}_LINKER=${prefix}gcc" "CC_${lower}=${prefix}gcc" "AR_${lower}=${prefix}ar")
  fi
  # shellcheck disable=SC2086
  (cd "$ROOT" && env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc "${cross_env[@]}" \
    /usr/bin/cargo build --profile "$PROFILE" --target "$triple" -p edge-broker --bin edge-broker \
      ${EDGE_CROSS_CARGO_ARGS:-})
  local bin="$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker"
  [ -x "$bin" ] || die "$bin was not produced"
  "${prefix}readelf" -h "$bin" | grep -q "Machine:.*$(machine_of "$t")" \
    || die "$bin is not an ELF for $(machine_of "$t")"
}

for t in "${TARGETS[@]}"; do build_one "$t"; done

# Stripped size: the release profile already strips; strip a copy anyway so the number stays the
# stripped one if a profile (e.g. bench) keeps symbols.
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
printf '\n%-32s %12s %14s  %s\n' "target" "bytes" "stripped bytes" "binary"
for t in "${TARGETS[@]}"; do
  triple="$(triple_of "$t")"; prefix="$(prefix_of "$t")"
  bin="$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker"
  "${prefix}strip" -o "$tmp/$t" "$bin"
  printf '%-32s %12s %14s  %s\n' "$triple" "$(stat -c %s "$bin")" "$(stat -c %s "$tmp/$t")" "$bin"
done
