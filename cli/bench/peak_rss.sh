#!/usr/bin/env bash
# Peak RSS of both ends of one loopback transfer, per plane and file size,
# written to tmpfs and to disk: memory must stay flat in the file size.
#
#   cli/bench/peak_rss.sh [SIZES_MIB="1024 4096"] [PLANES="fec reliable"] [DISK_DIR=$TMPDIR]
#
# Each line: plane, size, where the receiver wrote, peak RSS of sender and
# receiver (from /usr/bin/time -f %M), goodput. The source file lives on
# disk (page cache); the received copy is checked with b3sum and removed.
set -euo pipefail
sizes=${1:-"1024 4096"}; planes=${2:-"fec reliable"}; disk_dir=${3:-${TMPDIR:-/tmp}}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p chunkstream-cli
bin=$root/target/release/chunkstream-engine
work=$(mktemp -d -p "$disk_dir")
shm=$(mktemp -d -p /dev/shm)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work" "$shm"; }
trap cleanup EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readlines()[$2])['$1'])"; }
echo "| plane | size | received to | sender peak RSS | receiver peak RSS | goodput |"
echo "|---|---|---|---|---|---|"
for size in $sizes; do
  head -c $((size << 20)) /dev/urandom > "$work/src.bin"
  want=$(b3sum --no-names "$work/src.bin")
  for plane in $planes; do
    for where in tmpfs disk; do
      out=$([ $where = tmpfs ] && echo "$shm/out" || echo "$work/out")
      rm -rf "$out"
      /usr/bin/time -f "%M" -o "$work/recv.rss" "$bin" recv --listen 127.0.0.1:0 --out "$out" --state-dir "$work/state" --once --json > "$work/recv.out" 2>/dev/null & pids+=($!)
      for _ in $(seq 50); do [ "$(wc -l 2>/dev/null <"$work/recv.out" || echo 0)" -ge 1 ] && break; sleep 0.1; done
      line=$(head -1 "$work/recv.out")
      addr=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["addresses"][0])')
      fp=$(echo "$line" | field fingerprint 0); tok=$(echo "$line" | field token 0)
      /usr/bin/time -f "%M" -o "$work/send.rss" "$bin" send "$work/src.bin" --to "$addr" --peer "$fp" --token "$tok" --plane "$plane" --json > "$work/send.out"
      wait "${pids[-1]}"
      got=$(b3sum --no-names "$out/src.bin")
      [ "$got" = "$want" ] || { echo "$plane $size $where: received file differs"; exit 1; }
      g=$(field goodput_bps -1 < "$work/send.out")
      python3 -c "print(f'| $plane | $size MiB | $where | {int(open(\"$work/send.rss\").read())/1024:.0f} MiB | {int(open(\"$work/recv.rss\").read())/1024:.0f} MiB | {$g/1e9:.2f} Gbit/s |')"
      rm -rf "$out"
    done
  done
done
