#!/usr/bin/env bash
# Check the systemd integration files of edge-broker.
#
# Usage: systemd/check.sh [MAX_EXPOSURE]      (default 2.0)
#
#  1. the unit keeps the contract directives (Type=notify, watchdog, stop timeout > drain, ...)
#  2. `systemd-analyze verify` of the unit installed in a scratch root (--root) that holds the
#     host's unit files, /usr/bin/edge-broker and /bin/kill: verify insists that ExecStart/ExecReload
#     programs exist and are executable, resolved inside --root. The binary is the x86_64 build of
#     cross/build.sh when present (else /bin/true: verify only checks that it is executable).
#     Any diagnostic printed by verify is a failure (it exits 0 on "Failed to parse ..., ignoring").
#  3. `systemd-analyze security --offline=true` prints the table; the "Overall exposure level"
#     must be <= MAX_EXPOSURE.
#  4. sysusers and tmpfiles snippets applied to the scratch root (systemd-sysusers/-tmpfiles --root):
#     the user exists afterwards and /var/lib/edge-broker is created with mode 0750 and its owner.
# Installs the `systemd` package when systemd-analyze is missing (needs root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
UNIT="$HERE/edge-broker.service"
MAX="${1:-2.0}"

fail=0
pass() { printf 'PASS %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fail=1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check: systemd-analyze missing; installing the systemd package" >&2
  [ "$(id -u)" -eq 0 ] || { echo "check: need root to install systemd (or: apt-get install systemd)" >&2; exit 2; }
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends systemd >&2
fi

# --- 1. contract directives ----------------------------------------------------------------------
want=(
  'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30s'
  'ExecStart=/usr/bin/edge-broker --config /etc/edge-broker/edge-broker.toml'
  'ExecReload=/bin/kill -HUP $MAINPID' 'TimeoutStopSec=30s' 'Restart=on-failure'
  'User=edge-broker' 'StateDirectory=edge-broker' 'ProtectSystem=strict' 'CapabilityBoundingSet='
  'NoNewPrivileges=yes' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX'
  'SystemCallFilter=@system-service' 'SystemCallArchitectures=native' 'UMask=0077'
)
missing=()
for w in "${want[@]}"; do grep -qxF -- "$w" "$UNIT" || missing+=("$w"); done
if [ ${#missing[@]} -eq 0 ]; then pass "unit keeps the ${#want[@]} contract directives"
else bad "unit lacks: ${missing[*]}"; fi

# --- scratch root ---------------------------------------------------------------------------------
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
R="$SCRATCH/root"
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib/systemd" "$R/etc" "$R/var/lib"
ln -s usr/bin "$R/bin"; ln -s usr/lib "$R/lib"; ln -s usr/sbin "$R/sbin"
cp -a /usr/lib/systemd/system "$R/usr/lib/systemd/"
BIN="$ROOT/target/x86_64-unknown-linux-gnu/release/edge-broker"
[ -x "$BIN" ] || BIN=/bin/true
install -m 0755 "$BIN" "$R/usr/bin/edge-broker"
install -m 0755 /bin/kill "$R/usr/bin/kill"
install -m 0644 "$UNIT" "$R/usr/lib/systemd/system/edge-broker.service"

# --- 2. verify ------------------------------------------------------------------------------------
vout="$(systemd-analyze verify --man=no --root="$R" "$R/usr/lib/systemd/system/edge-broker.service" 2>&1)" && vrc=0 || vrc=$?
if [ "$vrc" -eq 0 ] && [ -z "$vout" ]; then
  pass "systemd-analyze verify (ExecStart -> $BIN): no diagnostics"
else
  bad "systemd-analyze verify exit $vrc:"; printf '%s\n' "$vout" | sed 's/^/    /'
fi

# --- 3. security ----------------------------------------------------------------------------------
sout="$(systemd-analyze security --offline=true --root="$R" "$R/usr/lib/systemd/system/edge-broker.service" 2>&1)" || true
printf '%s\n' "$sout" | grep -E '✗|Overall exposure' | sed 's/[[:space:]]*$//' | sed 's/^/    /'
score="$(printf '%s\n' "$sout" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -n1)"
if [ -z "$score" ]; then
  bad "no 'Overall exposure level' line from systemd-analyze security:"; printf '%s\n' "$sout" | tail -n 5
elif awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s <= m) }'; then
  pass "exposure $score <= $MAX"
else
  bad "exposure $score > $MAX"
fi

# --- 4. sysusers + tmpfiles -----------------------------------------------------------------------
for f in passwd group shadow gshadow; do : >"$R/etc/$f"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
install -D -m 0644 "$HERE/edge-broker.sysusers" "$R/usr/lib/sysusers.d/edge-broker.conf"
install -D -m 0644 "$HERE/edge-broker.tmpfiles" "$R/usr/lib/tmpfiles.d/edge-broker.conf"
uout="$(systemd-sysusers --root="$R" edge-broker.conf 2>&1)" && urc=0 || urc=$?
if [ "$urc" -eq 0 ] && grep -q '^edge-broker:x:[0-9]*:[0-9]*:edge-broker MQTT/NATS edge broker:/var/lib/edge-broker:/usr/sbin/nologin$' "$R/etc/passwd" \
   && grep -q '^edge-broker:x:' "$R/etc/group"; then
  pass "sysusers: $(grep '^edge-broker:' "$R/etc/passwd")"
else
  bad "sysusers exit $urc: $uout / passwd: $(cat "$R/etc/passwd")"
fi
tout="$(systemd-tmpfiles --root="$R" --create edge-broker.conf 2>&1)" && trc=0 || trc=$?
uid="$(awk -F: '$1=="edge-broker"{print $3}' "$R/etc/passwd")"
gid="$(awk -F: '$1=="edge-broker"{print $3}' "$R/etc/group")"
st_data="$(stat -c '%a %u:%g' "$R/var/lib/edge-broker" 2>/dev/null || echo missing)"
st_etc="$(stat -c '%a %u:%g' "$R/etc/edge-broker" 2>/dev/null || echo missing)"
if [ "$trc" -eq 0 ] && [ "$st_data" = "750 $uid:$gid" ] && [ "$st_etc" = "750 0:$gid" ]; then
  pass "tmpfiles: /var/lib/edge-broker $st_data, /etc/edge-broker $st_etc"
else
  bad "tmpfiles exit $trc: $tout / /var/lib/edge-broker: $st_data (want 750 $uid:$gid), /etc/edge-broker: $st_etc (want 750 0:$gid)"
fi

exit "$fail"
