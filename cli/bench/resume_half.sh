#!/usr/bin/env bash
# Resume after an interruption at half way, against a full send: one file
# sent to a receiver on loopback, the receiver killed (SIGKILL) once its
# journal records half the blocks, restarted, and the same send run again.
# Prints, for the full send and for the resumed one, the wall time of the
# send process (start to exit), the bytes quinn put on the wire and the
# bytes the receiver already held; every received file checked with b3sum.
#
#   cli/bench/resume_half.sh [SIZE_MIB=1024] [OUT_DIR=/dev/shm] [EXTRA SEND ARGS...]
#
# e.g. cli/bench/resume_half.sh 1024 /dev/shm --max-rate 1gbit --plane reliable
set -euo pipefail
size_mib=${1:-1024}; out_dir=${2:-/dev/shm}; shift $(( $# < 2 ? $# : 2 )) || true
extra=("$@")
here=$(cd "$(dirname "$0")/../.." && pwd)
B=$here/target/release/chunkstream-engine
[ -x "$B" ] || { echo "build first: cargo build --release -p chunkstream-cli" >&2; exit 1; }
work=$(mktemp -d); recv_dir=$(mktemp -d -p "$out_dir")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work" "$recv_dir"; }
trap cleanup EXIT
head -c $((size_mib << 20)) /dev/urandom > "$work/src.bin"; sync
want=$(b3sum --no-names "$work/src.bin")
blocks=$(( (size_mib << 20) / (1 << 20) ))

start_recv() {
  "$B" recv --listen 127.0.0.1:0 --out "$recv_dir" --state-dir "$work/state" --once --json > "$work/recv.out" 2> "$work/recv.err" & pids+=($!)
  for _ in $(seq 50); do [ "$(wc -l 2>/dev/null <"$work/recv.out" || echo 0)" -ge 1 ] && break; sleep 0.1; done
  read -r fp addr tok < <(head -1 "$work/recv.out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["fingerprint"], d["addresses"][0], d["token"])')
}
send() { "$B" send "$work/src.bin" --to "$addr" --peer "$fp" --token "$tok" --json "${extra[@]}"; }
report() { # label, json file, seconds
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
d = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
f = d["files"][0]
print("| %s | %.2f | %.1f | %.1f | %.1f |" % (sys.argv[1], float(sys.argv[3]), d["wire_bytes"] / 2**20, f["resumed_bytes"] / 2**20, d["goodput_bps"] / 1e6))
PY
}
check() { got=$(b3sum --no-names "$recv_dir/src.bin"); [ "$got" = "$want" ] || { echo "MISMATCH after $1" >&2; exit 1; }; }

echo "| send | wall s (process) | wire MiB | already there MiB | goodput Mbit/s (whole file / wall) |"
echo "|---|---|---|---|---|"
start_recv
t0=$(date +%s.%N); send > "$work/full.json"; t1=$(date +%s.%N)
wait "${pids[-1]}" || true; check "the full send"
report "full" "$work/full.json" "$(awk "BEGIN { print $t1 - $t0 }")"
rm -f "$recv_dir"/*

start_recv
rpid=${pids[-1]}
send > "$work/cut.json" 2>/dev/null & spid=$!; pids+=($spid)
# Half the blocks journaled (48 bytes a record after the 67-byte header
# a file named src.bin gets).
for _ in $(seq 6000); do
  j=$(stat -c %s "$recv_dir/src.bin.part.journal" 2>/dev/null || echo 0)
  [ "$j" -ge $(( 67 + 48 * blocks / 2 )) ] && break
  sleep 0.01
done
kill -9 "$rpid" "$spid" 2>/dev/null || true; { wait "$spid"; wait "$rpid"; } 2>/dev/null || true
echo "(interrupted with $(( ($(stat -c %s "$recv_dir/src.bin.part.journal") - 67) / 48 )) of $blocks blocks journaled)" >&2
start_recv
t0=$(date +%s.%N); send > "$work/resumed.json"; t1=$(date +%s.%N)
wait "${pids[-1]}" || true; check "the resumed send"
report "resumed after a kill at 50 %" "$work/resumed.json" "$(awk "BEGIN { print $t1 - $t0 }")"
