#!/usr/bin/env bash
# Build .deb packages of edge-broker with plain dpkg-deb (no cargo-deb).
#
# Usage: cross/deb.sh [arm64|armhf|amd64|all]      (default: all)
#
# Runs cross/build.sh for the matching target first (incremental: quick when nothing changed),
# stages the tree and writes $EDGE_DEB_OUT/edge-broker_<version>_<arch>.deb
# (EDGE_DEB_OUT defaults to $CARGO_TARGET_DIR/deb, i.e. target/deb). Prints the paths.
#
# Layout:
#   /usr/bin/edge-broker
#   /lib/systemd/system/edge-broker.service          systemd/edge-broker.service
#   /usr/lib/sysusers.d/edge-broker.conf             systemd/edge-broker.sysusers
#   /usr/lib/tmpfiles.d/edge-broker.conf             systemd/edge-broker.tmpfiles
#   /etc/edge-broker/edge-broker.toml   (conffile)   systemd/edge-broker.toml
#   /etc/default/edge-broker            (conffile)   systemd/edge-broker.env
#   /usr/share/doc/edge-broker/{copyright,README.md}
# Maintainer scripts create the system user (systemd-sysusers, else useradd) and the directories
# (systemd-tmpfiles, else install -d), enable the unit with deb-systemd-helper when it exists and
# start/restart it only when systemd is PID 1. They honour DPKG_ROOT (dpkg --root=DIR
# --force-script-chrootless), which cross/deb-check.sh uses to install into a scratch root.
#
# Environment:
#   EDGE_DEB_OUT           output directory (default $CARGO_TARGET_DIR/deb)
#   EDGE_DEB_REVISION      Debian revision (default 1) -> version <workspace version>-<revision>
#   EDGE_DEB_SKIP_BUILD=1  package the existing binaries without running cross/build.sh
#   EDGE_DEB_COMPRESS      dpkg-deb compressor (default xz; the test suite uses "none" to package
#                          a debug binary in seconds)
#   CARGO_TARGET_DIR, EDGE_BROKER_PROFILE   as for cross/build.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
die() { printf 'deb: ERROR: %s\n' "$*" >&2; exit 1; }

# One architecture or all: a second one used to be ignored without a word (as in cross/build.sh).
[ "$#" -le 1 ] || die "one architecture at a time, or all (got: $*)"
WANT="${1:-all}"
case "$WANT" in
  all) ARCHES=(arm64 armhf amd64) ;;
  arm64 | armhf | amd64) ARCHES=("$WANT") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown architecture '$WANT' (expected arm64, armhf, amd64 or all)" ;;
esac

command -v dpkg-deb >/dev/null || die "dpkg-deb missing (this script expects Debian)"
PROFILE="${EDGE_BROKER_PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac
OUT="${EDGE_DEB_OUT:-$CARGO_TARGET_DIR/deb}"
UPSTREAM="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
[ -n "$UPSTREAM" ] || die "no [workspace.package] version in $ROOT/Cargo.toml"
VERSION="$UPSTREAM-${EDGE_DEB_REVISION:-1}"
# Reproducible archives: dpkg-deb clamps mtimes to SOURCE_DATE_EPOCH.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

target_of() { case "$1" in arm64) echo aarch64 ;; armhf) echo armv7 ;; amd64) echo x86_64 ;; esac; }
triple_of() { case "$1" in arm64) echo aarch64-unknown-linux-gnu ;; armhf) echo armv7-unknown-linux-gnueabihf ;; amd64) echo x86_64-unknown-linux-gnu ;; esac; }
# Depends: libc6 (>= the highest GLIBC_x.y symbol version the binary needs): 2.28 for the
# default cross builds (cross/build.sh links against it), whatever the host's glibc is for
# other builds.
glibc_dep() { "$HERE/glibc-check.sh" "$1"; }

write_scripts() { # write_scripts DEBIAN_DIR
  local d="$1"
  cat >"$d/postinst" <<'EOF'
#!/bin/sh
# edge-broker postinst. DPKG_ROOT is set (non-empty) when dpkg installs into another root with
# --force-script-chrootless: then every action is applied to that root, never to this host.
set -e
ROOT="${DPKG_ROOT:-}"
NAME=edge-broker

ensure_user() {
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers ${ROOT:+--root="$ROOT"} "$NAME.conf"
  elif ! grep -q "^$NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
    useradd ${ROOT:+--prefix "$ROOT"} --system --user-group --no-create-home \
      --home-dir /var/lib/$NAME --shell /usr/sbin/nologin --comment "edge-broker MQTT/NATS edge broker" $NAME
  fi
}

ensure_dirs() {
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles ${ROOT:+--root="$ROOT"} --create "$NAME.conf"
  else
    uid="$(awk -F: -v n=$NAME '$1 == n { print $3 }' "$ROOT/etc/passwd")"
    gid="$(awk -F: -v n=$NAME '$1 == n { print $3 }' "$ROOT/etc/group")"
    install -d -m 0750 -o "$uid" -g "$gid" "$ROOT/var/lib/$NAME"
    chown "0:$gid" "$ROOT/etc/$NAME" && chmod 0750 "$ROOT/etc/$NAME"
  fi
}

if [ "$1" = configure ]; then
  ensure_user
  ensure_dirs
fi

if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
  if [ -n "$ROOT" ]; then
    # Offline image: enable only.
    if command -v systemctl >/dev/null 2>&1; then
      systemctl --root="$ROOT" --quiet enable $NAME.service || true
    fi
  elif command -v deb-systemd-helper >/dev/null 2>&1; then
    # As dh_installsystemd does: unmask what we masked on remove, enable on first install,
    # keep the admin's choice on upgrades.
    deb-systemd-helper unmask $NAME.service >/dev/null || true
    if deb-systemd-helper --quiet was-enabled $NAME.service; then
      deb-systemd-helper enable $NAME.service >/dev/null || true
    else
      deb-systemd-helper update-state $NAME.service >/dev/null || true
    fi
  fi
  # Only when systemd runs this machine (not in containers, chroots, image builds).
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    if [ -n "$2" ]; then action=restart; else action=start; fi
    if command -v deb-systemd-invoke >/dev/null 2>&1; then
      deb-systemd-invoke $action $NAME.service >/dev/null || true
    else
      systemctl $action $NAME.service >/dev/null || true
    fi
  fi
fi
exit 0
EOF
  cat >"$d/prerm" <<'EOF'
#!/bin/sh
# edge-broker prerm: stop on removal. On upgrade the unit keeps running until postinst restarts
# it (the broker drains on SIGTERM, so a restart loses nothing).
set -e
ROOT="${DPKG_ROOT:-}"
if [ "$1" = remove ] && [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  if command -v deb-systemd-invoke >/dev/null 2>&1; then
    deb-systemd-invoke stop edge-broker.service >/dev/null || true
  else
    systemctl stop edge-broker.service >/dev/null || true
  fi
fi
exit 0
EOF
  cat >"$d/postrm" <<'EOF'
#!/bin/sh
# edge-broker postrm. The system user is kept (Debian practice: files may still carry its uid).
# /var/lib/edge-broker is kept even on purge: it may hold acknowledged events that never reached
# Kafka. Delete it by hand once the data is no longer needed.
set -e
ROOT="${DPKG_ROOT:-}"
NAME=edge-broker
if [ "$1" = remove ] && [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ -n "$ROOT" ]; then
  if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/$NAME.service"
  fi
elif command -v deb-systemd-helper >/dev/null 2>&1; then
  if [ "$1" = remove ]; then
    deb-systemd-helper mask $NAME.service >/dev/null || true
  fi
  if [ "$1" = purge ]; then
    deb-systemd-helper purge $NAME.service >/dev/null || true
    deb-systemd-helper unmask $NAME.service >/dev/null || true
  fi
fi
if [ "$1" = purge ]; then
  rmdir "$ROOT/etc/$NAME" 2>/dev/null || true
  if [ -d "$ROOT/var/lib/$NAME" ]; then
    echo "edge-broker: kept /var/lib/$NAME (durable log; may hold events not yet forwarded)" >&2
  fi
fi
exit 0
EOF
  chmod 0755 "$d/postinst" "$d/prerm" "$d/postrm"
}

build_deb() { # build_deb ARCH
  local arch="$1" triple bin stage deb libc size
  triple="$(triple_of "$arch")"
  bin="$CARGO_TARGET_DIR/$triple/$PROFILE/edge-broker"
  [ -x "$bin" ] || die "$bin missing (run cross/build.sh $(target_of "$arch"))"
  stage="$CARGO_TARGET_DIR/deb/stage-$arch"
  rm -rf "$stage"
  install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/etc/default" \
    "$stage/usr/share/doc/edge-broker"
  # Group edge-broker does not exist at unpack time; postinst hands the directory to it.
  install -d -m 0750 "$stage/etc/edge-broker"
  # systemd credentials (LoadCredential=secrets:...): readable by root only.
  install -d -m 0700 "$stage/etc/edge-broker/secrets"
  install -m 0755 "$bin" "$stage/usr/bin/edge-broker"
  install -m 0644 "$ROOT/systemd/edge-broker.service" "$stage/lib/systemd/system/edge-broker.service"
  install -m 0644 "$ROOT/systemd/edge-broker.sysusers" "$stage/usr/lib/sysusers.d/edge-broker.conf"
  install -m 0644 "$ROOT/systemd/edge-broker.tmpfiles" "$stage/usr/lib/tmpfiles.d/edge-broker.conf"
  install -m 0644 "$ROOT/systemd/edge-broker.toml" "$stage/etc/edge-broker/edge-broker.toml"
  install -m 0644 "$ROOT/systemd/edge-broker.env" "$stage/etc/default/edge-broker"
  [ -f "$ROOT/README.md" ] && install -m 0644 "$ROOT/README.md" "$stage/usr/share/doc/edge-broker/README.md"
  cat >"$stage/usr/share/doc/edge-broker/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edge-broker

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
  printf '%s\n' /etc/edge-broker/edge-broker.toml /etc/default/edge-broker >"$stage/DEBIAN/conffiles"
  write_scripts "$stage/DEBIAN"
  (cd "$stage" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z \
     | xargs -0 md5sum >DEBIAN/md5sums)
  libc="$(glibc_dep "$stage/usr/bin/edge-broker")"
  size="$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)"
  cat >"$stage/DEBIAN/control" <<EOF
Package: edge-broker
Version: $VERSION
Architecture: $arch
Maintainer: edge-broker maintainers <edge-broker@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $libc)
Suggests: systemd
Section: net
Priority: optional
Homepage: https://example.invalid/edge-broker
Description: durable MQTT/NATS edge broker forwarding to Kafka
 edge-broker accepts MQTT 3.1.1/5 and NATS publishes from sensors on an edge
 gateway, appends every routed event to a durable local log before
 acknowledging it, and forwards the log to Kafka with backpressure and replay
 after uplink outages. One self-contained binary, run by a hardened systemd unit.
EOF
  mkdir -p "$OUT"
  deb="$OUT/edge-broker_${VERSION}_${arch}.deb"
  dpkg-deb --root-owner-group "-Z${EDGE_DEB_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
  echo "$deb"
}

for a in "${ARCHES[@]}"; do
  if [ "${EDGE_DEB_SKIP_BUILD:-0}" != 1 ]; then "$HERE/build.sh" "$(target_of "$a")" >&2; fi
  build_deb "$a"
done
