#!/usr/bin/env bash
# Single-path loopback goodput: chunkstream-engine (hashing on, verified)
# against plain quinn with one stream (same TLS, windows and socket buffers),
# interleaved in one run so all see the same machine state. Each round runs
# plain quinn twice (resending one cache-hot 1 MiB buffer, its best case, and
# cycling through 512 MiB of distinct memory: data that, like a file's, is
# not in cache), then `send` on its default plane (FEC, `--mtu auto`) and
# `send --plane reliable`, each timed by the sender's own steady figure and
# from process start to exit.
#
#   cli/bench/loopback_goodput.sh [SIZE_MIB=1024] [RUNS=3] [OUT_DIR=/dev/shm] [EXTRA SEND ARGS...]
#
# EXTRA SEND ARGS go to both sends (e.g. `--mtu 1452`).
#
# Prints one line per run and a summary with medians as Markdown. Receivers
# write to OUT_DIR (default tmpfs, so the disk's speed is not what we measure;
# pass a disk folder to include it). Needs b3sum for the final check.
set -euo pipefail
size_mib=${1:-1024}; runs=${2:-3}; out_dir=${3:-/dev/shm}; shift $(( $# < 3 ? $# : 3 )) || true
extra=("$@")
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p chunkstream-cli -p chunkstream-engine --bins --example plain_quinn
bin=$root/target/release/chunkstream-engine
pq=$root/target/release/examples/plain_quinn
work=$(mktemp -d)
recv_dir=$(mktemp -d -p "$out_dir")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work" "$recv_dir"; }
trap cleanup EXIT
head -c $((size_mib << 20)) /dev/urandom > "$work/src.bin"
sync  # no writeback of the fresh source competing with the first run
want=$(b3sum --no-names "$work/src.bin")

field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readlines()[$2])['$1'])"; }
cs=(); csw=(); rel=(); relw=(); pqs=(); pqc=()
for run in $(seq 1 "$runs"); do
  # plain quinn, hot buffer then cold memory
  for mib in 1 512; do
    "$pq" recv --listen 127.0.0.1:0 > "$work/pq.out" 2>/dev/null & pids+=($!)
    for _ in $(seq 50); do grep -q FINGERPRINT "$work/pq.out" && break; sleep 0.1; done
    read -r _ fp addr < "$work/pq.out"
    g=$("$pq" send --to "$addr" --peer "$fp" --bytes $((size_mib << 20)) --buffer-mib $mib | field goodput_bps -1)
    if [ $mib = 1 ]; then pqs+=("$g"); else pqc+=("$g"); fi
    wait "${pids[-1]}" || true
  done
  # chunkstream: the default plane, then the reliable one
  for plane in default reliable; do
    flags=(); [ $plane = reliable ] && flags=(--plane reliable)
    rm -rf "${recv_dir:?}"/*
    "$bin" recv --listen 127.0.0.1:0 --out "$recv_dir" --state-dir "$work/state" --once --json > "$work/cs.out" & pids+=($!)
    for _ in $(seq 50); do [ "$(wc -l 2>/dev/null <"$work/cs.out" || echo 0)" -ge 1 ] && break; sleep 0.1; done
    line=$(head -1 "$work/cs.out")
    addr=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["addresses"][0])')
    fp=$(echo "$line" | field fingerprint 0); tok=$(echo "$line" | field token 0)
    # Timed as a user would: from process start to exit.
    t0=$(date +%s.%N)
    "$bin" send "$work/src.bin" --to "$addr" --peer "$fp" --token "$tok" --json "${flags[@]}" "${extra[@]}" > "$work/send.out"
    t1=$(date +%s.%N)
    g=$(field goodput_bps -1 < "$work/send.out")
    w=$(python3 -c "print($size_mib * 8 * 1048576 / ($t1 - $t0))")
    # Wire bytes per file byte, and on the FEC plane the shard size and repair shards.
    info=$(python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).readlines()[-1]); f=d.get('fec'); print(d['plane'] + f\", wire {d['wire_bytes']/d['bytes']:.3f}x\" + (f', {f[\"shard_bytes\"]}-byte shards, {f[\"repair_shards\"]} repair shards' if f else ''))" "$work/send.out")
    if [ $plane = default ]; then cs+=("$g"); csw+=("$w"); else rel+=("$g"); relw+=("$w"); fi
    wait "${pids[-1]}"
    got=$(b3sum --no-names "$recv_dir/src.bin")
    [ "$got" = "$want" ] || { echo "run $run: received file differs ($got != $want)"; exit 1; }
    python3 -c "print(f'run $run: send ($plane plane: $info) {$g/1e9:.2f} Gbit/s steady, {$w/1e9:.2f} start to exit; b3sum verified')"
  done
  python3 -c "print(f'run $run: plain quinn hot {${pqs[-1]}/1e9:.2f}, cold {${pqc[-1]}/1e9:.2f} Gbit/s')"
done
python3 - "${pqs[*]}" "${pqc[*]}" "${cs[*]}" "${rel[*]}" "${csw[*]}" "${relw[*]}" <<'PY'
import statistics, sys
rows = [("plain quinn, 1 stream, hot 1 MiB buffer", sys.argv[1]),
        ("plain quinn, 1 stream, 512 MiB of distinct memory", sys.argv[2]),
        ("chunkstream-engine send, default plane (file via io_uring, BLAKE3, verified)", sys.argv[3]),
        ("chunkstream-engine send --plane reliable", sys.argv[4]),
        ("default plane, process start to exit", sys.argv[5]),
        ("--plane reliable, process start to exit", sys.argv[6])]
print("| contender | runs (Gbit/s) | median |")
print("|---|---|---|")
med = []
for name, xs in rows:
    v = [float(x) / 1e9 for x in xs.split()]
    med.append(statistics.median(v))
    print(f"| {name} | {', '.join(f'{x:.2f}' for x in v)} | {med[-1]:.2f} |")
print(f"\ndefault plane / reliable plane = {med[2] / med[3]:.0%}; / plain quinn cold = {med[2] / med[1]:.0%}; / plain quinn hot = {med[2] / med[0]:.0%}")
print(f"start to exit: default plane / reliable plane = {med[4] / med[5]:.0%}")
PY
