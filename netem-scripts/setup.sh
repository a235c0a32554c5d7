#!/usr/bin/env bash
# Build N emulated network paths between two network namespaces.
#
# Each path is one veth pair with its own subnet, shaped in both directions:
# with kernel netem where the kernel has it (rate, delay, loss), otherwise
# with what this kernel has: tbf for rate and an nftables `numgen random`
# rule for loss; delay is then unavailable, and the script says so.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: setup.sh [--prefix NAME] [--subnet A.B] [--fallback] --path RATE,DELAY,LOSS [--path ...]

Builds two network namespaces, NAME-snd and NAME-rcv, joined by one veth
pair per --path (path i: NAME-snd has A.B.i.1 on NAMEsI, NAME-rcv has
A.B.i.2 on NAMErI), and shapes each path in both directions.

  --path RATE,DELAY,LOSS   e.g. 200mbit,20ms,1%  (rate as tc understands it,
                           one-way delay, random loss); repeat per path
  --prefix NAME            namespace and interface prefix (default csb;
                           at most 8 characters)
  --subnet A.B             first two octets of the path subnets (default 10.77)
  --fallback               use tbf + nftables even if netem is available
  -h, --help               this text

Shaping backends:
  netem     tc netem on each veth: rate, delay and loss together.
  fallback  (kernel without sch_netem) tbf for rate on each veth, and an
            nftables rule dropping LOSS of packets as they arrive (after the
            bottleneck). Delay is NOT emulated in this mode: use the
            user-space link emulator (chunkstream-engine relay / the bench's
            TUN backend) when delay matters.

Idempotent: an existing topology with the same prefix is torn down first.
Remove everything with: teardown.sh --prefix NAME
Prints one line per path and, last, "backend=netem" or "backend=fallback".
USAGE
}

prefix=csb; subnet=10.77; force_fallback=0; paths=()
while [ $# -gt 0 ]; do
  case "$1" in
    --path) paths+=("${2:?--path needs RATE,DELAY,LOSS}"); shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a name}; shift 2 ;;
    --subnet) subnet=${2:?--subnet needs A.B}; shift 2 ;;
    --fallback) force_fallback=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "setup.sh: $*" >&2; exit 2; }
[ ${#paths[@]} -gt 0 ] || die "at least one --path RATE,DELAY,LOSS is required (see --help)"
[[ $prefix =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "--prefix must be 1-8 lowercase letters or digits, starting with a letter"
[[ $subnet =~ ^[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "--subnet must look like 10.77"
[ ${#paths[@]} -le 250 ] || die "at most 250 paths"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tc, nftables)"
for tool in ip tc; do command -v $tool >/dev/null || die "'$tool' not found (Debian: apt-get install iproute2)"; done

# Validate every path before touching anything.
rates=(); delays=(); losses=(); loss_ppm=()
for i in "${!paths[@]}"; do
  IFS=, read -r rate delay loss extra <<<"${paths[$i]}"
  n=$((i + 1))
  [ -z "${extra:-}" ] || die "path $n: expected RATE,DELAY,LOSS, got '${paths[$i]}'"
  [[ $rate =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$ ]] || die "path $n: rate '$rate' must look like 200mbit"
  [[ $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || die "path $n: delay '$delay' must look like 20ms"
  [[ $loss =~ ^[0-9]+(\.[0-9]+)?%$ ]] || die "path $n: loss '$loss' must look like 1%"
  ppm=$(awk -v l="${loss%\%}" 'BEGIN { printf "%d", l * 10000 + 0.5 }')
  [ "$ppm" -le 1000000 ] || die "path $n: loss '$loss' is over 100%"
  rates+=("$rate"); delays+=("$delay"); losses+=("$loss"); loss_ppm+=("$ppm")
done

here=$(cd "$(dirname "$0")" && pwd)
"$here/teardown.sh" --prefix "$prefix" >/dev/null
snd=$prefix-snd; rcv=$prefix-rcv
# From here on, a failure or an interruption must not leave half a
# topology behind.
trap 'echo "setup.sh: failed; removing what was built" >&2; "$here/teardown.sh" --prefix "$prefix" >/dev/null' ERR
trap 'echo "setup.sh: interrupted; removing what was built" >&2; "$here/teardown.sh" --prefix "$prefix" >/dev/null; exit 130' INT TERM
ip netns add "$snd"
ip netns add "$rcv"
ip -n "$snd" link set lo up
ip -n "$rcv" link set lo up

backend=netem
if [ $force_fallback = 1 ]; then backend=fallback; fi
nft_ready=0

# Rate, burst and queue for tbf: a burst of at least one MTU and 1 ms of
# rate; a queue of 50 ms at the rate (at least 64 packets).
tbf_args() {
  awk -v r="$1" 'BEGIN {
    n = r + 0; u = r; sub(/^[0-9.]+/, "", u)
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1
    bps = n * m / 8
    burst = bps / 1000; if (burst < 3000) burst = 3000
    limit = bps * 0.05; if (limit < 96000) limit = 96000
    printf "rate %s burst %d limit %d", r, burst, limit
  }'
}

add_loss_rule() { # namespace, interface, ppm
  local ns=$1 dev=$2 ppm=$3
  [ "$ppm" -gt 0 ] || return 0
  command -v nft >/dev/null || die "loss needs nftables in fallback mode (Debian: apt-get install nftables)"
  if [ $nft_ready = 0 ]; then
    for n in "$snd" "$rcv"; do
      ip netns exec "$n" nft add table inet chunkstream_loss
      ip netns exec "$n" nft 'add chain inet chunkstream_loss ingress { type filter hook prerouting priority -300; }'
    done
    nft_ready=1
  fi
  ip netns exec "$ns" nft add rule inet chunkstream_loss ingress iifname "$dev" numgen random mod 1000000 '<' "$ppm" drop
}

for i in "${!rates[@]}"; do
  n=$((i + 1)); s_dev=${prefix}s$n; r_dev=${prefix}r$n
  ip link add name "$s_dev" netns "$snd" type veth peer name "$r_dev" netns "$rcv"
  ip -n "$snd" addr add "$subnet.$n.1/24" dev "$s_dev"
  ip -n "$rcv" addr add "$subnet.$n.2/24" dev "$r_dev"
  ip -n "$snd" link set "$s_dev" up
  ip -n "$rcv" link set "$r_dev" up
  # Offloads would let tbf and nftables see 64 KB super-packets.
  if command -v ethtool >/dev/null; then
    for pair in "$snd $s_dev" "$rcv $r_dev"; do
      set -- $pair
      ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx-udp-segmentation off >/dev/null 2>&1 || true
    done
  else
    echo "warning: ethtool not found; offloads stay on (Debian: apt-get install ethtool)" >&2
  fi
  for pair in "$snd $s_dev" "$rcv $r_dev"; do
    set -- $pair
    if [ $backend = netem ]; then
      if ! ip netns exec "$1" tc qdisc add dev "$2" root netem rate "${rates[$i]}" delay "${delays[$i]}" loss "${losses[$i]}" limit 100000 2>/dev/null; then
        backend=fallback
        echo "sch_netem is not available in this kernel: falling back to tbf (rate) + nftables (loss); delay is unavailable in this mode" >&2
        # Undo netem on earlier paths and redo them in fallback mode.
        for j in $(seq 1 $((n - 1))); do
          ip netns exec "$snd" tc qdisc del dev "${prefix}s$j" root 2>/dev/null || true
          ip netns exec "$rcv" tc qdisc del dev "${prefix}r$j" root 2>/dev/null || true
          ip netns exec "$snd" tc qdisc add dev "${prefix}s$j" root tbf $(tbf_args "${rates[$((j - 1))]}")
          ip netns exec "$rcv" tc qdisc add dev "${prefix}r$j" root tbf $(tbf_args "${rates[$((j - 1))]}")
          add_loss_rule "$rcv" "${prefix}r$j" "${loss_ppm[$((j - 1))]}"
          add_loss_rule "$snd" "${prefix}s$j" "${loss_ppm[$((j - 1))]}"
        done
      fi
    fi
    if [ $backend = fallback ]; then
      ip netns exec "$1" tc qdisc add dev "$2" root tbf $(tbf_args "${rates[$i]}")
    fi
  done
  if [ $backend = fallback ]; then
    # Drop on arrival, i.e. after the sending side's bottleneck.
    add_loss_rule "$rcv" "$r_dev" "${loss_ppm[$i]}"
    add_loss_rule "$snd" "$s_dev" "${loss_ppm[$i]}"
  fi
done
trap - ERR INT TERM

for i in "${!rates[@]}"; do
  n=$((i + 1))
  d=${delays[$i]}; [ $backend = netem ] || d="unavailable (asked ${delays[$i]})"
  echo "path $n: $snd $subnet.$n.1 (${prefix}s$n) <-> $rcv $subnet.$n.2 (${prefix}r$n): rate ${rates[$i]}, loss ${losses[$i]}, delay $d"
done
if [ $backend = fallback ] && [ $force_fallback = 1 ]; then
  echo "fallback forced: tbf (rate) + nftables (loss); delay is unavailable in this mode" >&2
fi
echo "backend=$backend"
