#!/usr/bin/env bash
# A/B of two chunkstream-engine builds on one loopback path, interleaved in
# one batch so both see the same machine state: each round runs A then B.
#
#   cli/bench/loopback_ab.sh A_BIN B_BIN [SIZE_MIB=1024] [RUNS=3] [OUT_DIR=/dev/shm] [EXTRA SEND ARGS...]
#
# Build an older commit's binary with, e.g.:
#   git worktree add /tmp/base COMMIT && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p chunkstream-cli)
# Prints one line per run (goodput from the sender's --json, wire bytes per
# file byte, FEC repair shards) and the medians. Every received file is
# checked with b3sum.
set -euo pipefail
a=$1; b=$2; size_mib=${3:-1024}; runs=${4:-3}; out_dir=${5:-/dev/shm}; shift $(( $# < 5 ? $# : 5 )) || true
extra=("$@")
work=$(mktemp -d)
recv_dir=$(mktemp -d -p "$out_dir")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work" "$recv_dir"; }
trap cleanup EXIT
head -c $((size_mib << 20)) /dev/urandom > "$work/src.bin"
sync
want=$(b3sum --no-names "$work/src.bin")
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readlines()[$2])['$1'])"; }
declare -A goodput
for run in $(seq 1 "$runs"); do
  for side in A B; do
    bin=$([ $side = A ] && echo "$a" || echo "$b")
    rm -rf "${recv_dir:?}"/*
    "$bin" recv --listen 127.0.0.1:0 --out "$recv_dir" --state-dir "$work/state" --once --json > "$work/recv.out" & pids+=($!)
    for _ in $(seq 50); do [ "$(wc -l 2>/dev/null <"$work/recv.out" || echo 0)" -ge 1 ] && break; sleep 0.1; done
    line=$(head -1 "$work/recv.out")
    addr=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["addresses"][0])')
    fp=$(echo "$line" | field fingerprint 0); tok=$(echo "$line" | field token 0)
    "$bin" send "$work/src.bin" --to "$addr" --peer "$fp" --token "$tok" --json "${extra[@]}" > "$work/send.out"
    wait "${pids[-1]}"
    got=$(b3sum --no-names "$recv_dir/src.bin")
    [ "$got" = "$want" ] || { echo "run $run $side: received file differs"; exit 1; }
    g=$(field goodput_bps -1 < "$work/send.out")
    goodput[$side]="${goodput[$side]:-} $g"
    python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).readlines()[-1]); f=d.get('fec'); print(f'run $run $side: {d[\"goodput_bps\"]/1e9:.2f} Gbit/s, plane {d[\"plane\"]}, wire {d[\"wire_bytes\"]/d[\"bytes\"]:.3f}x' + (f', {f[\"repair_shards\"]} repair shards' if f else ''))" "$work/send.out"
  done
done
python3 -c "
import statistics as s
a=[float(x) for x in '${goodput[A]}'.split()]; b=[float(x) for x in '${goodput[B]}'.split()]
print(f'median A {s.median(a)/1e9:.2f} Gbit/s, B {s.median(b)/1e9:.2f} Gbit/s, B/A {s.median(b)/s.median(a):.3f}')"
