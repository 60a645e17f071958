#!/usr/bin/env bash
# One-time (idempotent) setup of the Debian cross toolchain for edge-broker.
#
# Usage: cross/setup.sh [aarch64|armv7|x86_64|all]     (default: all)
#
# Installs, when missing, on Debian bookworm:
#   rustc-web cargo-web (Rust 1.96 at /usr/bin, sysroot /usr), the cross gcc + libc6-dev for the
#   ARM targets (linkers, and C compilers for crates such as ring), qemu-user-static (cross/smoke.sh),
#   and the target's standard library: libstd-rust-web-dev:<arch> at EXACTLY the installed rustc-web
#   version, downloaded (not installed: its multiarch dependencies cannot be installed) and
#   extracted into /usr/lib/rustlib/<triple>.
# When everything is present it only runs a few dpkg-query calls and returns.
#
# The foreign package is fetched with a PRIVATE apt state (own lists/cache dirs, APT::Architectures
# set to that one architecture) instead of `dpkg --add-architecture`: this is the workaround that
# PEERS.md gives for the flaky armhf security index, used for both architectures because adding
# foreign architectures to the machine makes every later `apt-get update` on it fetch (and possibly
# fail on) the arm64/armhf indices. Nothing about the system's apt/dpkg configuration changes.
#
# Older glibc: cross/build.sh links against glibc 2.28 by default (Raspberry Pi OS buster and
# bullseye too), with cargo-zigbuild and zig (PyPI packages cargo-zigbuild and ziglang, pinned
# below), which this script installs into a venv of its own ($EDGE_CROSS_CACHE/zig-venv).
#
# On an arm64 machine (a Raspberry Pi with a 64-bit OS, an arm64 server) there is nothing to
# cross-compile for aarch64: the script says how to build natively (and why a .deb from an amd64
# machine is usually the better way onto a Pi) and exits 0.
#
# Environment:
#   EDGE_CROSS_CACHE   where the private apt state, downloads and the zig venv live
#                      (default /var/cache/edge-broker-cross)
#   EDGE_CROSS_FORCE=1 re-download and re-extract the target standard library
#   EDGE_CROSS_GLIBC   "native" skips zig (binaries then need the build machine's glibc)
#   EDGE_CROSS_HOST_ARCH  the host's Debian architecture (default: dpkg --print-architecture)
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# One target or all: a second one used to be ignored without a word (as in cross/build.sh).
[ "$#" -le 1 ] || die "one target at a time, or all (got: $*)"
WANT="${1:-all}"
case "$WANT" in
  all) TARGETS=(aarch64 armv7 x86_64) ;;
  aarch64 | armv7 | x86_64) TARGETS=("$WANT") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown target '$WANT' (expected aarch64, armv7, x86_64 or all)" ;;
esac

CACHE="${EDGE_CROSS_CACHE:-/var/cache/edge-broker-cross}"
APT_LOCK_WAIT=(-o DPkg::Lock::Timeout=900)   # other builds on the machine may hold the dpkg lock

# Root helper: run directly as root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (no sudo found)"
  fi
}

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

APT_UPDATED=0
apt_install() {
  local missing=() p
  for p in "$@"; do is_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get "${APT_LOCK_WAIT[@]}" update -qq || log "apt-get update reported errors; trying the install anyway"
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_LOCK_WAIT[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}" >&2
}

# target -> triple, Debian architecture, cross gcc package + libc package
triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; x86_64) echo x86_64-unknown-linux-gnu ;; esac; }
debarch_of() { case "$1" in aarch64) echo arm64 ;; armv7) echo armhf ;; x86_64) echo amd64 ;; esac; }
host_pkgs_of() {
  case "$1" in
    aarch64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static ;;
    armv7) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static ;;
    x86_64) echo gcc libc6-dev ;;
  esac
}

HOST_ARCH="${EDGE_CROSS_HOST_ARCH:-$(dpkg --print-architecture 2>/dev/null || uname -m)}"
if [ "$HOST_ARCH" = arm64 ] || [ "$HOST_ARCH" = aarch64 ]; then
  cat >&2 <<'GUIDE'
setup: this is an arm64 machine: nothing to cross-compile for aarch64, build natively:

    sudo apt-get install rustc-web cargo-web gcc    # Debian bookworm / Raspberry Pi OS bookworm
                                                     # (or Rust >= 1.89 from rustup)
    cargo build --release -p edge-broker             # -> target/release/edge-broker

On a Raspberry Pi a release build takes very long (LTO, one codegen unit: expect an hour or
more on a Pi 4, and 1 GB of RAM is not enough without swap; `--profile release-small` is no
faster). The quicker way onto a Pi: build the .deb on an amd64 machine
(cross/deb.sh arm64), copy it over and `sudo apt install ./edge-broker_*_arm64.deb`.
armv7 (32-bit Raspberry Pi OS) and x86_64 binaries are built on an amd64 machine.
GUIDE
  for t in "${TARGETS[@]}"; do
    [ "$t" = aarch64 ] || die "target $t: build it on an amd64 machine (see above)"
  done
  exit 0
fi
[ -r /etc/debian_version ] || die "this script expects Debian (bookworm); /etc/debian_version is missing"
[ "$HOST_ARCH" = amd64 ] || die "this script sets up cross builds on an amd64 Debian machine, not $HOST_ARCH: build natively there (cargo build --release -p edge-broker) or on an amd64 machine"

# 1. Host packages.
pkgs=(rustc-web cargo-web binutils xz-utils)
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2207
  pkgs+=($(host_pkgs_of "$t"))
done
apt_install "${pkgs[@]}"

RUST_VER="$(dpkg-query -W -f='${Version}' rustc-web)"
[ -n "$RUST_VER" ] || die "rustc-web is not installed"
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || die "/usr/bin/rustc or /usr/bin/cargo missing after installing rustc-web/cargo-web"

# 2. Target standard library at exactly $RUST_VER, from a private apt state for that architecture.
private_apt() { # private_apt ARCH apt-get-args...
  local arch="$1"; shift
  local st="$CACHE/apt-$arch"
  as_root mkdir -p "$st/lists/partial" "$st/cache/archives/partial"
  as_root apt-get \
    -o Dir::State::Lists="$st/lists" \
    -o Dir::Cache="$st/cache" \
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
    -o APT::Architecture="$arch" -o APT::Architectures::="$arch" \
    -o Acquire::Languages=none \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false \
    -o APT::Sandbox::User=root \
    "$@"
}

# Last resort when a suite's index keeps failing apt's size/hash check against the signed InRelease
# (seen on the armhf bookworm-security index behind this machine's mirror: a stale Packages.xz).
# Reads the Packages.xz the mirror serves, finds the exact version and downloads the .deb with
# apt's own downloader, which checks the SHA256 from that index. WEAKER than apt's chain of trust
# (the index itself could not be matched to the signature), hence the loud warning.
fetch_from_served_index() { # fetch_from_served_index ARCH DESTDIR -> prints the .deb path
  local arch="$1" dest="$2" repo uri tmp stanza filename sha
  tmp="$(mktemp -d)"
  while read -r repo uri; do
    [ -n "$uri" ] || continue
    rm -f "$tmp/Packages.xz"
    as_root /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file \
      "$uri.xz" "$tmp/Packages.xz" >/dev/null 2>&1 || continue
    stanza="$(xz -dc "$tmp/Packages.xz" 2>/dev/null | awk -v v="$RUST_VER" -v a="$arch" '
      BEGIN { RS = ""; FS = "\n" }
      $0 ~ /(^|\n)Package: libstd-rust-web-dev\n/ && index($0, "\nVersion: " v "\n") && index($0, "\nArchitecture: " a "\n") { print; exit }')"
    [ -n "$stanza" ] || continue
    filename="$(printf '%s\n' "$stanza" | sed -n 's/^Filename: //p')"
    sha="$(printf '%s\n' "$stanza" | sed -n 's/^SHA256: //p')"
    [ -n "$filename" ] && [ -n "$sha" ] || continue
    log "WARNING: using the $arch index served by $repo without a signature match; the .deb is checked against its SHA256 $sha"
    as_root /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file \
      "${repo%/}/$filename" "$dest/${filename##*/}" "SHA256:$sha" >&2 || continue
    rm -rf "$tmp"
    echo "$dest/${filename##*/}"; return 0
  done < <(private_apt "$arch" indextargets --no-release-info 'Created-By: Packages' --format '$(REPO_URI) $(URI)')
  rm -rf "$tmp"
  return 1
}

fetch_libstd() { # fetch_libstd ARCH -> prints the path of the downloaded .deb
  local arch="$1" st="$CACHE/apt-$1" want="libstd-rust-web-dev:$1=$RUST_VER" attempt deb
  as_root mkdir -p "$st/dl"
  deb="$(ls -t "$st"/dl/libstd-rust-web-dev_*_"$arch".deb 2>/dev/null | head -n1 || true)"
  if [ -n "$deb" ] && [ "$(dpkg-deb -f "$deb" Version 2>/dev/null)" = "$RUST_VER" ]; then
    echo "$deb"; return 0
  fi
  for attempt in 1 2; do
    log "fetching $want with a private apt state (attempt $attempt)"
    # A failed index (e.g. "File has unexpected size" on the armhf security suite) is not fatal
    # by itself: what matters is whether the exact version can be downloaded afterwards.
    private_apt "$arch" -qq update >&2 || log "private apt-get update for $arch reported errors"
    if (cd "$st/dl" && private_apt "$arch" -qq download "$want" >&2); then
      deb="$(ls -t "$st"/dl/libstd-rust-web-dev_*_"$arch".deb 2>/dev/null | head -n1 || true)"
      if [ -n "$deb" ] && [ "$(dpkg-deb -f "$deb" Version)" = "$RUST_VER" ]; then
        echo "$deb"; return 0
      fi
    fi
    log "download failed; wiping the private $arch lists and retrying"
    as_root rm -rf "$st/lists"
    sleep 2
  done
  deb="$(fetch_from_served_index "$arch" "$st/dl")" && [ "$(dpkg-deb -f "$deb" Version)" = "$RUST_VER" ] \
    && [ "$(dpkg-deb -f "$deb" Package)" = libstd-rust-web-dev ] && { echo "$deb"; return 0; }
  die "could not download libstd-rust-web-dev:$arch=$RUST_VER (does the mirror still carry that version? see PEERS.md)"
}

install_libstd() { # install_libstd TARGET
  local t="$1" triple arch dst stamp deb tmp
  triple="$(triple_of "$t")"; arch="$(debarch_of "$t")"
  if [ "$t" = x86_64 ]; then
    # Native: rustc-web depends on libstd-rust-web-dev (host) at its own version.
    compgen -G "/usr/lib/rustlib/$triple/lib/libstd-*.rlib" >/dev/null \
      || die "/usr/lib/rustlib/$triple has no libstd (is libstd-rust-web-dev installed?)"
    return 0
  fi
  dst="/usr/lib/rustlib/$triple"
  stamp="$dst/.edge-broker-libstd-version"
  if [ "${EDGE_CROSS_FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$RUST_VER" ] \
     && compgen -G "$dst/lib/libstd-*.rlib" >/dev/null; then
    return 0
  fi
  deb="$(fetch_libstd "$arch")"
  tmp="$(mktemp -d)"
  dpkg-deb -x "$deb" "$tmp"
  [ -d "$tmp/usr/lib/rustlib/$triple/lib" ] || { rm -rf "$tmp"; die "$deb does not contain usr/lib/rustlib/$triple"; }
  # Replace as a whole: a previous version's rlibs would only confuse rustc.
  as_root rm -rf "$dst.new"
  as_root cp -a "$tmp/usr/lib/rustlib/$triple" "$dst.new"
  echo "$RUST_VER" | as_root tee "$dst.new/.edge-broker-libstd-version" >/dev/null
  as_root rm -rf "$dst"
  as_root mv "$dst.new" "$dst"
  rm -rf "$tmp"
  log "installed the $triple standard library $RUST_VER into $dst"
}

for t in "${TARGETS[@]}"; do install_libstd "$t"; done

# 3. zig as the linker for an older glibc (cargo-zigbuild), in a venv of its own.
CARGO_ZIGBUILD_VERSION=0.24.0
ZIGLANG_VERSION=0.17.0
install_zig() {
  local venv="$CACHE/zig-venv"
  if [ -x "$venv/bin/cargo-zigbuild" ] && "$venv/bin/python" -c 'import ziglang' 2>/dev/null \
     && [ "$("$venv/bin/cargo-zigbuild" --version 2>/dev/null | awk '{print $2}')" = "$CARGO_ZIGBUILD_VERSION" ]; then
    return 0
  fi
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION and ziglang $ZIGLANG_VERSION into $venv"
  as_root mkdir -p "$CACHE"
  as_root python3 -m venv "$venv"
  as_root "$venv/bin/pip" install -q --disable-pip-version-check \
    "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION" >&2
}
if [ "${EDGE_CROSS_GLIBC:-2.28}" != native ]; then install_zig; fi
log "ready: rustc-web $RUST_VER, targets ${TARGETS[*]}"
