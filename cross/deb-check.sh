#!/usr/bin/env bash
# Check the .deb packages built by cross/deb.sh.
#
# Usage: cross/deb-check.sh [arm64|armhf|amd64|all] [DEB...]
#   Without DEB arguments it checks $EDGE_DEB_OUT/edge-broker_*_<arch>.deb (default target/deb),
#   building them with cross/deb.sh when missing.
#
# For each package:
#  1. dpkg-deb --info: name, version, architecture, Depends: libc6 (>= the highest glibc symbol
#     version the packaged binary needs, cross/glibc-check.sh), conffiles,
#     maintainer scripts.
#  2. dpkg-deb --contents: every file at its path with its mode, owned by root; nothing unexpected.
#  3. the packaged binary is an ELF for the package's architecture.
#  4. a real dpkg install into a scratch root (dpkg --root=DIR --force-script-chrootless, so the
#     maintainer scripts run with DPKG_ROOT=DIR and act on DIR only), twice:
#       with systemd tools:    user via systemd-sysusers, dirs via systemd-tmpfiles, unit enabled
#       without systemd tools (PATH without systemctl/systemd-*/deb-systemd-*): useradd + install -d
#     then files land where expected, dpkg status and conffiles are right, a reinstall (upgrade
#     path) keeps an edited conffile, remove keeps conffiles, purge removes them but keeps
#     /var/lib/edge-broker; and the host is untouched (no user, no enable symlink).
#  5. for the package of this machine's architecture: the normal host path (DPKG_ROOT empty,
#     deb-systemd-helper) via plain `dpkg -i/-r/-P` on the real filesystem seen through overlays
#     in a private mount namespace (unshare -m), so nothing persists. EDGE_DEB_CHECK_HOST=0: off.
# Needs root (dpkg --root, chown in the scratch root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

WANT="${1:-all}"
[ $# -gt 0 ] && shift
case "$WANT" in
  all) ARCHES=(arm64 armhf amd64) ;;
  arm64 | armhf | amd64) ARCHES=("$WANT") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "deb-check: unknown architecture '$WANT'" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "deb-check: run as root (dpkg --root needs it)" >&2; exit 2; }

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="${EDGE_DEB_OUT:-$TARGET_DIR/deb}"
UPSTREAM="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"

fails=0
CUR=""
pass() { printf 'PASS %-6s %s\n' "$CUR" "$*"; }
bad() { printf 'FAIL %-6s %s\n' "$CUR" "$*"; fails=$((fails + 1)); }
absent() { local p; for p in "$@"; do [ ! -e "$p" ] && [ ! -L "$p" ] || return 1; done; }
present() { local p; for p in "$@"; do [ -f "$p" ] || return 1; done; }
check() { # check DESCRIPTION COMMAND... : PASS/FAIL on the command's status
  local what="$1"; shift
  if "$@"; then pass "$what"; else bad "$what"; fi
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

machine_of() { case "$1" in arm64) echo AArch64 ;; armhf) echo ARM ;; amd64) echo 'X86-64' ;; esac; }

# Expected contents: mode owner path
EXPECTED="drwxr-x--- root/root ./etc/edge-broker/
-rw-r--r-- root/root ./etc/edge-broker/edge-broker.toml
-rw-r--r-- root/root ./etc/default/edge-broker
-rwxr-xr-x root/root ./usr/bin/edge-broker
-rw-r--r-- root/root ./lib/systemd/system/edge-broker.service
-rw-r--r-- root/root ./usr/lib/sysusers.d/edge-broker.conf
-rw-r--r-- root/root ./usr/lib/tmpfiles.d/edge-broker.conf
-rw-r--r-- root/root ./usr/share/doc/edge-broker/copyright"

static_checks() { # static_checks ARCH DEB
  local arch="$1" deb="$2" info contents extra dep
  info="$(dpkg-deb --info "$deb")"
  f() { dpkg-deb --field "$deb" "$1"; }
  check "Package: edge-broker" [ "$(f Package)" = edge-broker ]
  check "Architecture: $arch" [ "$(f Architecture)" = "$arch" ]
  check "Version: $(f Version) starts with $UPSTREAM-" grep -q "^${UPSTREAM//./\\.}-" <<<"$(f Version)"
  dep="$(f Depends)"
  local packaged need
  packaged="$(mktemp)"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/edge-broker >"$packaged"
  need="$("$HERE/glibc-check.sh" "$packaged" 2>/dev/null || echo '?')"
  rm -f "$packaged"
  if [ "$dep" = "libc6 (>= $need)" ]; then
    pass "Depends: $dep (the binary's highest GLIBC_ symbol version)"
  else
    bad "Depends: '$dep' (want libc6 (>= $need): the binary's highest GLIBC_ symbol version)"
  fi
  check "conffiles: /etc/edge-broker/edge-broker.toml /etc/default/edge-broker" \
    [ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | sort | tr '\n' ' ')" = "/etc/default/edge-broker /etc/edge-broker/edge-broker.toml " ]
  local s scripts_ok=1
  for s in postinst prerm postrm; do
    grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$s " <<<"$info" || { bad "$s missing or not executable"; scripts_ok=0; }
  done
  [ "$scripts_ok" = 0 ] || pass "maintainer scripts postinst, prerm, postrm present and executable"
  contents="$(dpkg-deb --contents "$deb" | awk '{ print $1, $2, $6 }')"
  local missing=()
  while read -r mode owner path; do
    grep -qxF -- "$mode $owner $path" <<<"$contents" || missing+=("$mode $owner $path")
  done <<<"$EXPECTED"
  if [ ${#missing[@]} -eq 0 ]; then pass "contents: all $(wc -l <<<"$EXPECTED") expected entries with mode and owner"
  else bad "contents lack: ${missing[*]}"; fi
  extra="$(awk '$3 !~ /\/$/' <<<"$contents" | awk '{ print $3 }' | grep -vxF -f <(awk '{ print $3 }' <<<"$EXPECTED") | grep -vx './usr/share/doc/edge-broker/README.md' || true)"
  check "contents: no unexpected files${extra:+ (found: $extra)}" [ -z "$extra" ]
  check "contents: everything owned by root/root" [ -z "$(awk '$2 != "root/root"' <<<"$contents")" ]
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/edge-broker >"$WORK/bin"
  check "binary is an ELF for $(machine_of "$arch")" grep -q "Machine:.*$(machine_of "$arch")" <<<"$(readelf -h "$WORK/bin")"
}

new_root() { # new_root DIR : minimal root with a dpkg database and root in passwd/group
  local r="$1"
  mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers" "$r/var/log" "$r/etc"
  : >"$r/var/lib/dpkg/status"; : >"$r/var/lib/dpkg/available"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  printf 'root:*::0:99999:7:::\n' >"$r/etc/shadow"
  printf 'root:*::\n' >"$r/etc/gshadow"
  chmod 0640 "$r/etc/shadow" "$r/etc/gshadow"
}

rdpkg() { # rdpkg ROOT ARGS... : dpkg acting on ROOT, maintainer scripts run unchrooted with DPKG_ROOT
  local r="$1"; shift
  dpkg --root="$r" --force-script-chrootless --force-architecture --force-depends \
    --force-confold --log="$r/var/log/dpkg.log" "$@"
}

install_checks() { # install_checks ARCH DEB MODE   (MODE: systemd | plain)
  local arch="$1" deb="$2" mode="$3" r out uid gid pathenv="$PATH" d
  r="$WORK/root-$arch-$mode"
  new_root "$r"
  if [ "$mode" = plain ]; then
    # A PATH with every tool of the host except systemd's, like a machine without systemd.
    d="$WORK/path-plain"
    if [ ! -d "$d" ]; then
      mkdir -p "$d"
      for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
        [ -d "$dir" ] || continue
        for x in "$dir"/*; do
          case "${x##*/}" in systemctl | systemd-* | deb-systemd-*) continue ;; esac
          [ -e "$d/${x##*/}" ] || ln -s "$x" "$d/${x##*/}"
        done
      done
    fi
    pathenv="$d"
  fi
  local tag="install[$mode]"
  if out="$(PATH="$pathenv" rdpkg "$r" -i "$deb" 2>&1)"; then pass "$tag: dpkg --root -i"
  else bad "$tag: dpkg --root -i failed: $out"; return; fi

  local missing=() p
  for p in usr/bin/edge-broker lib/systemd/system/edge-broker.service usr/lib/sysusers.d/edge-broker.conf \
           usr/lib/tmpfiles.d/edge-broker.conf etc/edge-broker/edge-broker.toml etc/default/edge-broker; do
    [ -f "$r/$p" ] || missing+=("/$p")
  done
  check "$tag: files in place${missing:+ (missing: ${missing[*]})}" [ ${#missing[@]} -eq 0 ]
  check "$tag: /usr/bin/edge-broker is the packaged binary" cmp -s "$r/usr/bin/edge-broker" "$WORK/bin"
  check "$tag: unit identical to systemd/edge-broker.service" cmp -s "$r/lib/systemd/system/edge-broker.service" "$ROOT/systemd/edge-broker.service"
  out="$(rdpkg "$r" -s edge-broker 2>&1)"
  check "$tag: status install ok installed" grep -qx 'Status: install ok installed' <<<"$out"
  check "$tag: dpkg registered both conffiles" \
    [ "$(grep -cE '^ /etc/(edge-broker/edge-broker.toml|default/edge-broker) [0-9a-f]{32}$' <<<"$out")" = 2 ]
  uid="$(awk -F: '$1 == "edge-broker" { print $3 }' "$r/etc/passwd")"
  gid="$(awk -F: '$1 == "edge-broker" { print $3 }' "$r/etc/group")"
  check "$tag: system user edge-broker (uid ${uid:-none} < 1000, home /var/lib/edge-broker, nologin)" \
    grep -Eq '^edge-broker:x:[0-9]+:[0-9]+:[^:]*:/var/lib/edge-broker:/usr/sbin/nologin$' "$r/etc/passwd"
  [ -n "$uid" ] && [ "$uid" -lt 1000 ] || bad "$tag: uid '${uid:-}' is not a system uid"
  check "$tag: /var/lib/edge-broker 750 edge-broker:edge-broker" [ "$(stat -c '%a %u:%g' "$r/var/lib/edge-broker" 2>&1)" = "750 $uid:$gid" ]
  check "$tag: /etc/edge-broker 750 root:edge-broker" [ "$(stat -c '%a %u:%g' "$r/etc/edge-broker" 2>&1)" = "750 0:$gid" ]
  local wants="$r/etc/systemd/system/multi-user.target.wants/edge-broker.service"
  if [ "$mode" = systemd ]; then
    check "$tag: unit enabled (multi-user.target.wants -> $(readlink "$wants" 2>/dev/null || echo none))" \
      [ "$(readlink "$wants" 2>/dev/null)" = /lib/systemd/system/edge-broker.service ]
  fi

  # Upgrade path (postinst configure with the old version): an edited conffile survives.
  echo '# edited by deb-check' >>"$r/etc/edge-broker/edge-broker.toml"
  if out="$(PATH="$pathenv" rdpkg "$r" -i "$deb" 2>&1)"; then pass "$tag: reinstall (upgrade path)"
  else bad "$tag: reinstall failed: $out"; fi
  check "$tag: edited conffile kept on reinstall" grep -qx '# edited by deb-check' "$r/etc/edge-broker/edge-broker.toml"
  check "$tag: same uid after reinstall" [ "$(awk -F: '$1 == "edge-broker" { print $3 }' "$r/etc/passwd")" = "$uid" ]

  if out="$(PATH="$pathenv" rdpkg "$r" -r edge-broker 2>&1)"; then pass "$tag: remove"
  else bad "$tag: remove failed: $out"; fi
  check "$tag: remove deleted the binary and the unit" absent "$r/usr/bin/edge-broker" "$r/lib/systemd/system/edge-broker.service"
  check "$tag: remove kept the conffiles" present "$r/etc/edge-broker/edge-broker.toml" "$r/etc/default/edge-broker"
  check "$tag: status after remove: deinstall ok config-files" grep -qx 'Status: deinstall ok config-files' <<<"$(rdpkg "$r" -s edge-broker 2>&1)"
  check "$tag: enable symlink gone after remove" absent "$wants"
  touch "$r/var/lib/edge-broker/00000000000000000000.seg"
  if out="$(PATH="$pathenv" rdpkg "$r" -P edge-broker 2>&1)"; then pass "$tag: purge"
  else bad "$tag: purge failed: $out"; fi
  check "$tag: purge deleted the conffiles" absent "$r/etc/edge-broker/edge-broker.toml" "$r/etc/default/edge-broker"
  check "$tag: purge kept the durable log in /var/lib/edge-broker" [ -f "$r/var/lib/edge-broker/00000000000000000000.seg" ]
}

# The normal host path (DPKG_ROOT empty: deb-systemd-helper, systemd-sysusers on /etc) of the
# package for this machine's architecture, run by dpkg on the real filesystem seen through
# overlays in a private mount namespace: every change vanishes when the namespace ends.
# systemd is not PID 1 here (/run/systemd/system absent), as in containers and image builds:
# the scripts must enable the unit without trying to start it. EDGE_DEB_CHECK_HOST=0 turns it off.
host_ns_checks() { # host_ns_checks DEB
  local deb="$1" t out
  if [ "${EDGE_DEB_CHECK_HOST:-1}" = 0 ]; then echo "note: host-path install check turned off (EDGE_DEB_CHECK_HOST=0)"; return; fi
  t="$WORK/hostns"; mkdir -p "$t"
  out="$(unshare -m --propagation private bash -s "$deb" "$t" 2>&1 <<'INNER'
set -u
deb="$1"; t="$2"
ok() { echo "PASS $*"; }
no() { echo "FAIL $*"; }
for d in usr etc var; do
  mkdir -p "$t/upper/$d" "$t/work/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$t/upper/$d,workdir=$t/work/$d" "/$d" \
    || { no "install[host]: cannot overlay /$d (needs root and overlayfs; EDGE_DEB_CHECK_HOST=0 to skip)"; exit 0; }
done
[ ! -d /run/systemd/system ] || { no "install[host]: systemd is PID 1 here; this check would start the service"; exit 0; }
if o="$(dpkg -i "$deb" 2>&1)"; then ok "install[host]: dpkg -i"; else no "install[host]: dpkg -i: $o"; exit 0; fi
u="$(getent passwd edge-broker)"
[[ "$u" =~ ^edge-broker:x:[0-9]+:[0-9]+:.*:/var/lib/edge-broker:/usr/sbin/nologin$ ]] && ok "install[host]: user $u" || no "install[host]: user '$u'"
[ "$(stat -c '%a %U:%G' /var/lib/edge-broker)" = "750 edge-broker:edge-broker" ] && ok "install[host]: /var/lib/edge-broker 750 edge-broker:edge-broker" || no "install[host]: /var/lib/edge-broker $(stat -c '%a %U:%G' /var/lib/edge-broker)"
[ "$(stat -c '%a %U:%G' /etc/edge-broker)" = "750 root:edge-broker" ] && ok "install[host]: /etc/edge-broker 750 root:edge-broker" || no "install[host]: /etc/edge-broker $(stat -c '%a %U:%G' /etc/edge-broker)"
w=/etc/systemd/system/multi-user.target.wants/edge-broker.service
[ "$(readlink "$w")" = /lib/systemd/system/edge-broker.service ] && ok "install[host]: enabled via deb-systemd-helper" || no "install[host]: not enabled ($w)"
[ -e /var/lib/systemd/deb-systemd-helper-enabled/edge-broker.service.dsh-also ] && ok "install[host]: deb-systemd-helper state recorded" || no "install[host]: no deb-systemd-helper state"
if o="$(dpkg -i "$deb" 2>&1)"; then ok "install[host]: reinstall (upgrade path)"; else no "install[host]: reinstall: $o"; fi
if o="$(dpkg -r edge-broker 2>&1)"; then ok "install[host]: remove"; else no "install[host]: remove: $o"; fi
[ -e /var/lib/systemd/deb-systemd-helper-masked/edge-broker.service ] && ok "install[host]: remove masked the unit (deb-systemd-helper)" || no "install[host]: remove did not mask"
if o="$(dpkg -P edge-broker 2>&1)"; then ok "install[host]: purge"; else no "install[host]: purge: $o"; fi
[ ! -e "$w" ] && [ ! -L "$w" ] && ok "install[host]: purge removed the enable symlink" || no "install[host]: enable symlink left after purge"
[ ! -e /var/lib/systemd/deb-systemd-helper-masked/edge-broker.service ] && ok "install[host]: purge unmasked" || no "install[host]: still masked after purge"
[ ! -e /etc/edge-broker/edge-broker.toml ] && [ ! -e /etc/default/edge-broker ] && ok "install[host]: purge removed the conffiles" || no "install[host]: conffiles left after purge"
[ -d /var/lib/edge-broker ] && ok "install[host]: purge kept /var/lib/edge-broker" || no "install[host]: purge deleted /var/lib/edge-broker"
INNER
)" || true
  [ -n "$out" ] || out="FAIL install[host]: unshare produced nothing (needs root and mount namespaces; EDGE_DEB_CHECK_HOST=0 to skip)"
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) pass "${line#PASS }" ;;
      "FAIL "*) bad "${line#FAIL }" ;;
    esac
  done <<<"$out"
  grep -q '^PASS install\[host\]: dpkg -i' <<<"$out" || printf '%s\n' "$out" | tail -n 5 | sed 's/^/    /'
}

debs_for() { # debs_for ARCH -> newest matching .deb
  ls -t "$OUT"/edge-broker_*_"$1".deb 2>/dev/null | head -n1
}

host_user_before="$(getent passwd edge-broker || true)"
host_wants_before="$(ls /etc/systemd/system/multi-user.target.wants/edge-broker.service 2>/dev/null || true)"

if [ $# -gt 0 ]; then
  DEBS=("$@")
else
  DEBS=()
  for a in "${ARCHES[@]}"; do
    deb="$(debs_for "$a")"
    if [ -z "$deb" ]; then "$HERE/deb.sh" "$a" >/dev/null; deb="$(debs_for "$a")"; fi
    [ -n "$deb" ] || { echo "deb-check: no package for $a in $OUT" >&2; exit 1; }
    DEBS+=("$deb")
  done
fi

for deb in "${DEBS[@]}"; do
  arch="$(dpkg-deb --field "$deb" Architecture)"
  CUR="$arch"
  echo "== $deb"
  static_checks "$arch" "$deb"
  install_checks "$arch" "$deb" systemd
  install_checks "$arch" "$deb" plain
  if [ "$arch" = "$(dpkg --print-architecture)" ]; then host_ns_checks "$deb"; fi
done

CUR=host
check "the host has no new edge-broker user from these installs" \
  [ "$(getent passwd edge-broker || true)" = "$host_user_before" ]
check "the host has no new enable symlink from these installs" \
  [ "$(ls /etc/systemd/system/multi-user.target.wants/edge-broker.service 2>/dev/null || true)" = "$host_wants_before" ]

[ "$fails" -eq 0 ] || { echo "deb-check: $fails check(s) failed" >&2; exit 1; }
echo "deb-check: all checks passed"
