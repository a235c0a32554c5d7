#!/usr/bin/env bash
# Many senders at once against one receiver on loopback: N `send`
# processes (default 200), each with its own 256 KiB file, started
# together against one `recv`. Prints how many failed, the wall time from
# the first start to the last exit, how many times the receiver refused a
# connection as busy, the receiver's peak memory (VmHWM), the errors
# senders printed (grouped), and checks every received file with b3sum.
#
#   cli/bench/many_senders.sh [SENDERS=200] [RECV ARGS...]
#
# RECV ARGS go to `recv` (e.g. `--max-connections 1000` to see the
# receiver without its limit).
set -euo pipefail
n=${1:-200}; shift $(( $# < 1 ? $# : 1 )) || true
recv_args=("$@")
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p chunkstream-cli
bin=$root/target/release/chunkstream-engine
work=$(mktemp -d)
recv_pid=
cleanup() { [ -n "$recv_pid" ] && kill "$recv_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir "$work/src" "$work/logs"
for i in $(seq 1 "$n"); do head -c 262144 /dev/urandom > "$work/src/f$i"; done
"$bin" recv --listen 127.0.0.1:0 --out "$work/out" --state-dir "$work/state" --token t --json "${recv_args[@]}" \
  > "$work/logs/recv.json" 2> "$work/logs/recv.err" &
recv_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/logs/recv.json" 2>/dev/null && break; sleep 0.1; done
read -r addr fp < <(python3 -c "import json,sys;d=json.loads(open(sys.argv[1]).readline());print(d['addresses'][0], d['fingerprint'])" "$work/logs/recv.json")
start=$(date +%s.%N)
pids=()
for i in $(seq 1 "$n"); do
  "$bin" send "$work/src/f$i" --to "$addr" --peer "$fp" --token t > "$work/logs/s$i.out" 2> "$work/logs/s$i.err" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
end=$(date +%s.%N)
busy=$(grep -c '"event":"busy"' "$work/logs/recv.json" || true)
peak=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$recv_pid/status")
bad=0
for i in $(seq 1 "$n"); do
  [ "$(b3sum --no-names "$work/src/f$i")" = "$(b3sum --no-names "$work/out/f$i" 2>/dev/null || true)" ] || bad=$((bad + 1))
done
echo "senders $n  failed $failed  files not verified $bad  wall $(python3 -c "print(f'{$end-$start:.1f}')") s  busy refusals $busy  receiver peak RSS $peak"
cat "$work/logs"/s*.err | grep -i '^error' | sed -E 's/127\.0\.0\.1:[0-9]+/ADDR/' | sort | uniq -c | sort -rn | head -5 || true
