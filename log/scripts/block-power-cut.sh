#!/usr/bin/env bash
# Power cuts at the block level: edge-log on a real ext4 file system on a loop device, the
# page cache lost at each cut. Not a CI test (it needs root, a loop device and mount).
#
#   sudo log/scripts/block-power-cut.sh [ROUNDS] [stop|running]   (default 20 stop)
#   EDGE_LOG_CRASH_SECTOR_WRITES=1 ...   the same with `sector_writes` (O_DIRECT sector writes)
#   EDGE_LOG_CRASH_INTERVAL_MS=20 ...     fsync = interval:20ms instead of always (with sector
#                                         writes: an interval's appends gathered into one write)
#
# Each round: a writer (the crash test binary in child mode: 16 tasks appending with
# fsync = always and printing every offset acknowledged as durable) runs on the mounted image
# for a random 0.3-1.5 s; then
#   1. `stop`: SIGSTOP the writer, no acknowledgement after this instant. `running`: the
#      writer keeps going; only what it acknowledged before the copy starts is checked;
#   2. copy the image file while the kernel's writeback to the loop device (and, `running`,
#      the writer) goes on: the copy holds every write the device completed before the copy
#      started, and some of those in flight during it, in whatever order the copy met them
#      (`running` produces harsher states than a real device would: later writes without
#      earlier ones); the inner file system's dirty page cache is lost;
#   3. SIGKILL the writer, unmount; the copy becomes the disk the machine "reboots" with:
#      mount it (ext4 replays its journal), open the log (edge-log recovers), and check that
#      every record acknowledged in any round so far is there, intact, at its offset.
# The next round appends on that recovered disk.
#
# Why not dm-flakey / dm-log-writes: they need the kernel's device mapper. Where `dmsetup
# targets` answers "Failure to communicate with kernel device-mapper driver" (a kernel built
# without CONFIG_BLK_DEV_DM and without loadable modules, as on the build machine), this
# script is the block-level cut available. With device mapper, dm-log-writes + replay-log
# would add replay of every prefix of the write log; not done here.
set -euo pipefail
rounds=${1:-20}
mode=${2:-stop}
case "$mode" in stop | running) ;; *) echo "mode is stop or running" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need losetup mount
need mkfs.ext4 e2fsprogs
if [ "$(id -u)" -ne 0 ]; then
    echo "needs root (losetup, mount)" >&2
    exit 1
fi

echo "building the crash test binary" >&2
bin=$(CARGO_PROFILE_DEV_DEBUG=line-tables-only cargo test -p edge-log --test crash --no-run \
    --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build the crash test binary" >&2; exit 1; }

work=$(mktemp -d /var/tmp/edge-log-cut.XXXXXX)
img=$work/disk.img
mnt=$work/mnt
mkdir -p "$mnt"
loop=
cleanup() {
    set +e
    [ -n "${writer:-}" ] && kill -9 "$writer" 2>/dev/null
    mountpoint -q "$mnt" && umount "$mnt"
    [ -n "$loop" ] && losetup -d "$loop"
    rm -rf "$work"
}
trap cleanup EXIT

attach() {
    loop=$(losetup -f --show "$img")
    mount -t ext4 "$loop" "$mnt"
}
detach() {
    umount "$mnt"
    losetup -d "$loop"
    loop=
}

truncate -s 256M "$img"
mkfs.ext4 -q -F "$img"
attach
mkdir -p "$mnt/log"
: > "$work/acked"
lost_total=0
printf '| round | ran | acknowledged (all rounds) | in the log | lost | recovery |\n|---:|---:|---:|---:|---:|---|\n'
for round in $(seq 1 "$rounds"); do
    EDGE_LOG_CRASH_CHILD_DIR="$mnt/log" EDGE_LOG_CRASH_ROUND="$round" \
        "$bin" --exact crash_child_entry --nocapture --test-threads=1 \
        > "$work/round.out" 2>/dev/null &
    writer=$!
    ran_ms=$((300 + RANDOM % 1200))
    sleep "$(printf '0.%03d' "$ran_ms")" 2>/dev/null || sleep 1
    [ "$mode" = stop ] && kill -STOP "$writer"
    grep '^DURABLE ' "$work/round.out" >> "$work/acked" || true
    cp --sparse=always "$img" "$work/cut.img"
    kill -9 "$writer"
    wait "$writer" 2>/dev/null || true
    writer=
    detach
    mv "$work/cut.img" "$img"
    attach
    out=$(EDGE_LOG_VERIFY_DIR="$mnt/log" EDGE_LOG_VERIFY_ACKED="$work/acked" \
        "$bin" --exact crash_verify_entry --nocapture --test-threads=1 2>&1 || true)
    line=$(printf '%s\n' "$out" | grep -o 'VERIFIED.*' || true)
    if [ -z "$line" ]; then
        printf '%s\n' "$out" >&2
        echo "round $round: verification failed" >&2
        exit 1
    fi
    acked=$(sed -n 's/.*acknowledged=\([0-9]*\).*/\1/p' <<<"$line")
    lost=$(sed -n 's/.*lost=\([0-9]*\).*/\1/p' <<<"$line")
    records=$(sed -n 's/.* records=\([0-9]*\).*/\1/p' <<<"$line")
    report=$(sed -n 's/.*| //p' <<<"$line" | sed "s/^edge-log recovered: //; s|$mnt/log/||g; s/|/\\|/g")
    printf '| %d | %d ms | %d | %d | %d | %s |\n' "$round" "$ran_ms" "$acked" "$records" "$lost" "$report"
    lost_total=$((lost_total + lost))
done
echo
echo "acknowledged records lost over $rounds block-level power cuts ($mode): $lost_total"
[ "$lost_total" -eq 0 ]
