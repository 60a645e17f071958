#!/usr/bin/env bash
# The oldest glibc a binary runs on: its highest GLIBC_x.y symbol version requirement.
#
# Usage: cross/glibc-check.sh BINARY [MAX]
#   Prints the version (e.g. 2.28). With MAX, exits 1 when the binary needs a newer glibc than
#   MAX, naming the release it rules out. Works on ELF files of any architecture (readelf reads
#   the version-needs section without running anything; `objdump -T BINARY` with the target's
#   binutils shows the same symbols one by one).
#
# glibc of the systems we build for:  Raspberry Pi OS / Debian buster 2.28, bullseye 2.31,
# bookworm 2.36;  Ubuntu 20.04 2.31, 22.04 2.35.
set -euo pipefail
die() { printf 'glibc-check: %s\n' "$*" >&2; exit 2; }
case "${1:-}" in -h | --help | "") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
BIN="$1"; MAX="${2:-}"
[ -f "$BIN" ] || die "no file $BIN"
command -v readelf >/dev/null || die "readelf missing (apt-get install binutils)"
NEED="$(readelf -V "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
[ -n "$NEED" ] || die "$BIN needs no versioned glibc symbol (static, or not an ELF executable?)"
echo "$NEED"
if [ -n "$MAX" ] && [ "$(printf '%s\n%s\n' "$NEED" "$MAX" | sort -V | tail -n1)" != "$MAX" ]; then
  printf 'glibc-check: %s needs glibc %s, newer than %s: it will not start on systems with glibc %s\n' \
    "$BIN" "$NEED" "$MAX" "$MAX" >&2
  exit 1
fi
