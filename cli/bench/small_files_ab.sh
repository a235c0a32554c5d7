#!/usr/bin/env bash
# A/B of two builds sending a folder of many small files over one relayed
# path on loopback (default plane), the builds alternating, each send
# timed from process start to exit, every file checked with b3sum. The
# receiver writes to tmpfs (relay_setup.sh), so its disk is not measured.
#
#   cli/bench/small_files_ab.sh BIN_A BIN_B ROUNDS COUNT BYTES [relay options...]
#
# e.g. cli/bench/small_files_ab.sh /tmp/a/chunkstream-engine target/release/chunkstream-engine \
#        3 1000 10000 --rate 200mbit --delay 20ms --loss 5%
# Round N uses relay seed SEED0 + N (SEED0 defaults to 10); every send
# starts cold. With DIRECT=1 there is no relay (relay options are
# ignored): each build sends straight to a receiver of its own build, so
# receiver-side changes are compared too.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1 b=$2 rounds=$3 count=$4 bytes=$5
shift 5
size=0
# shellcheck source=relay_setup.sh
source "$(dirname "$0")/relay_setup.sh"
need_executables "$a" "$b"
if [ "${DIRECT:-0}" = 1 ]; then
  start_receiver "$a"; direct_a=$rx_addr fingerprint_a=$fingerprint
fi
start_receiver "$b"
direct_b=$rx_addr fingerprint_b=$fingerprint
mkdir -p "$work/small"
for i in $(seq "$count"); do head -c "$bytes" /dev/urandom >"$work/small/f$i"; done
(cd "$work/small" && b3sum -- *) >"$work/want"
for round in $(seq "$rounds"); do
  seed=$((${SEED0:-10} + round))
  for label in A B; do
    bin=$a; [ "$label" = B ] && bin=$b
    if [ "${DIRECT:-0}" = 1 ]; then
      to=$direct_b fingerprint=$fingerprint_b
      [ "$label" = A ] && to=$direct_a fingerprint=$fingerprint_a
    else
      start_relay "$bin" "$seed" "$@"
      to=127.0.0.1:$relay_port
    fi
    start=$(date +%s%N)
    "$bin" send "$work/small" --peer "$fingerprint" --token bench --mtu "${MTU:-1452}" \
      --path "127.0.0.1=$to" --json --cold-start --state-dir "$work/sender" \
      >"$work/send.json" 2>"$work/send.err"
    end=$(date +%s%N)
    [ "${DIRECT:-0}" = 1 ] || stop_relay
    (cd "$out/small" && b3sum -- *) | cmp -s - "$work/want" || { echo "round $round $label: received files differ" >&2; exit 1; }
    rm -rf "$out/small"
    shards=$(python3 -c 'import json,sys; d=[json.loads(l) for l in open(sys.argv[1])][-1]; f=d.get("fec") or {}; print(f.get("shards_sent", 0), "shards for", f.get("source_shards", 0), "sources")' "$work/send.json")
    echo "round $round $label: $(( (end - start) / 1000000 )) ms start to exit, $count files verified; $shards"
    sleep 0.5
  done
done
