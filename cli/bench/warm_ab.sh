#!/usr/bin/env bash
# Cold against warm start of one build over one relayed path on loopback:
# a first send teaches the sender the path (its path memory, in a state
# directory of its own), then sends alternate between --cold-start and a
# warm start from what the sends before learned. Each transfer is timed
# from process start to exit and its copy checked with b3sum.
#
#   cli/bench/warm_ab.sh BIN ROUNDS SIZE_MIB [relay options...]
#
# e.g. cli/bench/warm_ab.sh target/release/chunkstream-engine 5 64 \
#        --rate 200mbit --delay 20ms --loss 5%
# (the relay's loss applies to both directions). No root needed. The
# datagrams are pinned at 1452 bytes (MTU=auto or a size to change that).
# With LOGS=DIR set, each sender's debug log is kept there.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
bin=$1 rounds=$2 size=$3
shift 3
# shellcheck source=relay_setup.sh
source "$(dirname "$0")/relay_setup.sh"
need_executables "$bin"
start_receiver "$bin"
# One relay for every send: the path (its name is the relay's address) is
# the same path each time.
start_relay "$bin" 10 "$@"
pids+=("$relay")

one() { # label, extra send flags...
  local label=$1
  shift
  local start end
  start=$(date +%s.%N)
  env ${LOGS:+RUST_LOG=chunkstream_engine::send=debug} "$bin" send "$work/src.bin" --peer "$fingerprint" --token bench --mtu "${MTU:-1452}" \
    --path "127.0.0.1=127.0.0.1:$relay_port" --state-dir "$work/sender" --json "$@" \
    >"$work/send.json" 2>"$work/send.err"
  end=$(date +%s.%N)
  got=$(b3sum --no-names "$out/src.bin")
  [ "$got" = "$want" ] || { echo "$label: received copy differs" >&2; exit 1; }
  rm -f "$out/src.bin"
  [ -z "${LOGS:-}" ] || { mkdir -p "$LOGS"; cp "$work/send.err" "$LOGS/${label// /-}.log"; }
  python3 - "$label" "$start" "$end" "$size" "$work/send.json" <<'PY'
import json, sys
label, start, end, size, report = sys.argv[1:]
secs = float(end) - float(start)
done = [json.loads(l) for l in open(report) if '"done"' in l][-1]
p = done["paths"][0]
warm = "warm" if p.get("warm_start") else "cold"
carried = p.get("carried", {}).get("rate_bps", 0) / 1e6
print(f"{label}: {int(size) * 8 * 1.048576 / secs:.1f} Mbit/s, {secs:.2f} s start to exit ({warm} start; carried {carried:.1f} Mbit/s); b3sum verified")
PY
  sleep 0.5
}

one "first send"
for round in $(seq "$rounds"); do
  one "round $round cold" --cold-start
  one "round $round warm"
done
