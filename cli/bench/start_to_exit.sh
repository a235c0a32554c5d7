#!/usr/bin/env bash
# How long one send takes from process start to exit over loopback (no
# relay, no shaping), per file size, for two builds alternating, and the
# reliable plane of the second build beside them. What a user waits for
# when the file is small: start-up, the first round trips, the close.
#
#   cli/bench/start_to_exit.sh BIN_A BIN_B ROUNDS SIZE_BYTES...
#
# e.g. cli/bench/start_to_exit.sh /tmp/a/chunkstream-engine target/release/chunkstream-engine 5 10000 1048576 67108864
# Every copy is checked with cmp. Prints the median milliseconds per size
# and contender.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1 b=$2 rounds=$3
shift 3
# The work folder, its cleanup and a receiver (relay_setup.sh; no source
# file of its own: size 0).
size=0
# shellcheck source=relay_setup.sh
source "$(dirname "$0")/relay_setup.sh"
need_executables "$a" "$b"
start_receiver "$b"
for size in "$@"; do
  head -c "$size" /dev/urandom >"$work/f$size.bin"
done
: >"$work/times"
for round in $(seq "$rounds"); do
  for size in "$@"; do
    for contender in A B B-reliable; do
      bin=$a plane=fec
      case $contender in B) bin=$b ;; B-reliable) bin=$b plane=reliable ;; esac
      start=$(date +%s%N)
      "$bin" send "$work/f$size.bin" --to "$rx_addr" --peer "$fingerprint" --token bench \
        --plane "$plane" --json >"$work/send.json" 2>"$work/send.err" || { echo "round $round $contender $size: send failed" >&2; cat "$work/send.err" >&2; exit 1; }
      end=$(date +%s%N)
      cmp -s "$work/f$size.bin" "$out/f$size.bin" || { echo "round $round $contender $size: copy differs" >&2; exit 1; }
      rm -f "$out/f$size.bin"
      echo "$size $contender $(( (end - start) / 1000 ))" >>"$work/times"
    done
  done
done
python3 - "$work/times" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    size, who, us = line.split()
    runs.setdefault((int(size), who), []).append(int(us) / 1000)
for (size, who), ms in sorted(runs.items()):
    print(f"{size:>10} bytes  {who:<10}  median {statistics.median(ms):6.1f} ms  ({', '.join(f'{m:.0f}' for m in ms)})")
EOF
