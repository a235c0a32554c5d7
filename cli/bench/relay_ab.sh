#!/usr/bin/env bash
# A/B of two builds of chunkstream-engine over one relayed path on loopback:
# the builds alternate, each transfer timed from process start to exit, its
# copy checked with b3sum, and the sender's mean "sent against pace" (its
# debug log: what left over what its pacer allowed) printed beside it.
#
#   cli/bench/relay_ab.sh BIN_A BIN_B ROUNDS SIZE_MIB [relay options...]
#
# e.g. cli/bench/relay_ab.sh /tmp/a/chunkstream-engine target/release/chunkstream-engine \
#        3 64 --rate 200mbit --delay 20ms --loss 5%
# (the relay's loss applies to both directions). No root needed. With
# LOGS=DIR set, each sender's debug log is kept there as ROUND-A.log / ROUND-B.log.
# Round N uses relay seed SEED0 + N (SEED0 defaults to 10).
# MTU=auto (or a size) replaces the pinned 1452-byte datagrams. Every send
# starts cold (--cold-start): a first transfer over the path, as the bench's.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1 b=$2 rounds=$3 size=$4
shift 4
# shellcheck source=relay_setup.sh
source "$(dirname "$0")/relay_setup.sh"
need_executables "$a" "$b"
start_receiver "$b"

for round in $(seq "$rounds"); do
  # Both builds of a round meet the same losses (the relay's seed).
  seed=$((${SEED0:-10} + round))
  for label in A B; do
    bin=$a; [ "$label" = B ] && bin=$b
    start_relay "$bin" "$seed" "$@"
    start=$(date +%s.%N)
    RUST_LOG=chunkstream_engine::send=debug "$bin" send "$work/src.bin" --peer "$fingerprint" \
      --token bench --mtu "${MTU:-1452}" --path "127.0.0.1=127.0.0.1:$relay_port" --json \
      --cold-start --state-dir "$work/sender" >"$work/send.json" 2>"$work/send.err"
    end=$(date +%s.%N)
    stop_relay
    got=$(b3sum --no-names "$out/src.bin")
    [ "$got" = "$want" ] || { echo "round $round $label: received copy differs" >&2; exit 1; }
    rm -f "$out/src.bin"
    [ -z "${LOGS:-}" ] || { mkdir -p "$LOGS"; cp "$work/send.err" "$LOGS/$round-$label.log"; }
    python3 - "$round" "$label" "$start" "$end" "$size" "$work/send.err" <<'EOF'
import re, sys
rnd, label, start, end, size, log = sys.argv[1:]
secs = float(end) - float(start)
sent = paced = n = 0
for line in open(log):
    m = re.search(r"sent_mbit=([0-9.]+) paced_mbit=([0-9.]+)", line)
    if m:
        sent += float(m.group(1)); paced += float(m.group(2)); n += 1
pace = f", sent {sent / n:.1f} of a pace of {paced / n:.1f} Mbit/s (mean)" if n else ""
print(f"round {rnd} {label}: {int(size) * 8 * 1.048576 / secs:.1f} Mbit/s, {secs:.2f} s start to exit{pace}; b3sum verified")
EOF
    sleep 0.5
  done
done
