#!/usr/bin/env bash
# Multi-path baselines over the same three shaped paths as the namespace
# test (netem-scripts/setup.sh: veth pairs with tbf at 100, 200 and 300
# Mbit/s, no delay): chunkstream over all three paths and over the best one,
# TCP (iperf3, BBR, this kernel's default) with -P 3 on the best path and
# one flow per path, and kernel MPTCP (iperf3 under mptcpize, BBR) with the
# receiver announcing its other two addresses. Prints a Markdown table with
# per-interface byte splits. Root; needs iperf3 and mptcpize.
#
#   sudo cli/bench/multipath_baselines.sh [SIZE_MIB] [SECONDS]
set -euo pipefail
SIZE_MIB=${1:-1024}
SECS=${2:-15}
here=$(cd "$(dirname "$0")/../.." && pwd)
B=$here/target/release/chunkstream-engine
[ -x "$B" ] || { echo "build first: cargo build --release -p chunkstream-cli" >&2; exit 1; }
for t in iperf3 mptcpize ip; do command -v $t >/dev/null || { echo "$t is not installed" >&2; exit 1; }; done
P=mpb$$
D=$(mktemp -d)
cleanup() { "$here/netem-scripts/teardown.sh" --prefix $P >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT INT TERM
"$here/netem-scripts/setup.sh" --prefix $P --path 100mbit,0ms,0% --path 200mbit,0ms,0% --path 300mbit,0ms,0% >/dev/null 2>&1
snd() { ip netns exec $P-snd "$@"; }
rcv() { ip netns exec $P-rcv "$@"; }
txbytes() { for i in 1 2 3; do cat /sys/class/net/${P}s$i/statistics/tx_bytes 2>/dev/null || snd cat /sys/class/net/${P}s$i/statistics/tx_bytes; done | tr '\n' ' '; }
split() { # before after -> "a / b / c %"
  python3 -c "
b=[int(x) for x in '$1'.split()]; a=[int(x) for x in '$2'.split()]
d=[y-x for x,y in zip(b,a)]; t=sum(d) or 1
print(' / '.join('%.1f'%(x*100/t) for x in d) + ' %')"
}
head -c $((SIZE_MIB << 20)) /dev/urandom > "$D/src.bin"
echo "| contender | goodput (Mbit/s) | bytes on 100 / 200 / 300 Mbit/s paths |"
echo "|---|---|---|"

chunk() { # label, path args...
  local label=$1; shift
  rm -rf "$D/out" "$D/state"
  rcv "$B" recv --listen 10.77.1.2:4433 --listen 10.77.2.2:4433 --listen 10.77.3.2:4433 \
      --out "$D/out" --once --json --state-dir "$D/state" --token t > "$D/recv.log" 2>&1 &
  sleep 0.5
  local fp; fp=$(head -1 "$D/recv.log" | python3 -c "import json,sys;print(json.load(sys.stdin)['fingerprint'])")
  local before; before=$(txbytes)
  snd "$B" send "$D/src.bin" --peer "$fp" --token t --json "$@" > "$D/send.out"
  wait
  local g; g=$(tail -1 "$D/send.out" | python3 -c "import json,sys;print('%.1f'%(json.load(sys.stdin)['goodput_bps']/1e6))")
  echo "| $label | $g (verified) | $(split "$before" "$(txbytes)") |"
}
chunk "chunkstream, 3 paths" --path ${P}s1=10.77.1.2:4433 --path ${P}s2=10.77.2.2:4433 --path ${P}s3=10.77.3.2:4433
chunk "chunkstream, best path only" --path ${P}s3=10.77.3.2:4433

iperf() { # label, client command...
  local label=$1; shift
  local before; before=$(txbytes)
  "$@" > "$D/ip.json"
  python3 - "$D/ip.json" "$label" "$before" "$(txbytes)" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
# one or several concatenated JSON documents (parallel clients)
dec, i, rates, cc = json.JSONDecoder(), 0, [], set()
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    v, i = dec.raw_decode(text, i)
    rates.append(v["end"]["sum_received"]["bits_per_second"])
    cc.add(v["end"].get("sender_tcp_congestion", "?"))
b = [int(x) for x in sys.argv[3].split()]; a = [int(x) for x in sys.argv[4].split()]
d = [y - x for x, y in zip(b, a)]; t = sum(d) or 1
print("| %s (%s) | %.1f (iperf3's rate, memory) | %s %% |" % (sys.argv[2], "/".join(sorted(cc)), sum(rates) / 1e6, " / ".join("%.1f" % (x * 100 / t) for x in d)))
PY
}
rcv iperf3 -s -1 -B 10.77.3.2 >/dev/null 2>&1 & sleep 0.3
iperf "TCP iperf3 -P 3, best path" snd iperf3 -c 10.77.3.2 -P 3 -C bbr -t "$SECS" -J
wait
for i in 1 2 3; do rcv iperf3 -s -1 -B 10.77.$i.2 -p 520$i >/dev/null 2>&1 & done; sleep 0.3
iperf "TCP, one iperf3 flow per path" bash -c "
  for i in 1 2 3; do ip netns exec $P-snd iperf3 -c 10.77.\$i.2 -B 10.77.\$i.1 -p 520\$i -C bbr -t $SECS -J > $D/ip\$i.json & done; wait
  cat $D/ip1.json $D/ip2.json $D/ip3.json"
wait
# Kernel MPTCP: the receiver announces its other two addresses; the sender
# accepts them and opens one subflow to each, routed over their own paths.
rcv ip mptcp limits set subflow 2 add_addr_accepted 2
snd ip mptcp limits set subflow 2 add_addr_accepted 2
rcv ip mptcp endpoint add 10.77.2.2 dev ${P}r2 signal
rcv ip mptcp endpoint add 10.77.3.2 dev ${P}r3 signal
# The listener must take joins on every announced address: no -B.
rcv mptcpize run iperf3 -s -1 >/dev/null 2>&1 & sleep 0.3
iperf "MPTCP (kernel, iperf3 under mptcpize)" snd mptcpize run iperf3 -c 10.77.1.2 -C bbr -t "$SECS" -J
wait
