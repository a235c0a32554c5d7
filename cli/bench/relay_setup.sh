# Sourced by relay_ab.sh and warm_ab.sh: a work folder cleaned up on exit,
# a random SIZE_MIB-byte source file and its b3sum, a free UDP port
# (`port`), and a receiver on loopback (`start_receiver BIN`, which sets
# rx_addr and fingerprint). Needs b3sum; `size` set before sourcing.
command -v b3sum >/dev/null || { echo "b3sum is needed (apt-get install b3sum)" >&2; exit 2; }

work=$(mktemp -d)
out=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work" "$out"
}
trap cleanup EXIT

head -c "$((size << 20))" /dev/urandom >"$work/src.bin"
want=$(b3sum --no-names "$work/src.bin")
sync

port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_receiver() {
  "$1" recv --listen "127.0.0.1:$(port)" --out "$out" --state-dir "$work/state" \
    --token bench --json >"$work/recv.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do [ "$(wc -l 2>/dev/null <"$work/recv.log" || echo 0)" -ge 1 ] && break; sleep 0.1; done
  local rx
  rx=$(python3 -c 'import json,sys; e=json.loads(open(sys.argv[1]).readline()); print(e["addresses"][0], e["fingerprint"])' "$work/recv.log")
  rx_addr=${rx% *} fingerprint=${rx#* }
}

# Exits with a message unless every argument is an executable.
need_executables() {
  for bin in "$@"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
  done
}

# Starts BIN's relay in front of the receiver with SEED and the relay
# options that follow; sets relay_port and relay (its pid).
start_relay() {
  local bin=$1 seed=$2
  shift 2
  relay_port=$(port)
  "$bin" relay --listen "127.0.0.1:$relay_port" --to "$rx_addr" --seed "$seed" "$@" >/dev/null 2>&1 &
  relay=$!
  sleep 0.3
}

# Stops the relay start_relay started.
stop_relay() {
  kill "$relay" 2>/dev/null || true
  wait "$relay" 2>/dev/null || true
}

