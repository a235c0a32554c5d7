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
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
work=$(mktemp -d)
out=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work" "$out"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$b" recv --listen "127.0.0.1:$port" --out "$out" --state-dir "$work/state" --json >"$work/recv.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/recv.log" ] && break; sleep 0.1; done
read -r fingerprint token < <(python3 -c 'import json,sys; e=json.loads(open(sys.argv[1]).readline()); print(e["fingerprint"], e["token"])' "$work/recv.log")
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
      "$bin" send "$work/f$size.bin" --to "127.0.0.1:$port" --peer "$fingerprint" --token "$token" \
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
