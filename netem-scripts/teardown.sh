#!/usr/bin/env bash
# Remove what setup.sh built. Safe to run any number of times.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: teardown.sh [--prefix NAME]

Deletes the namespaces NAME-snd and NAME-rcv (default prefix csb); their
veth pairs, qdiscs and nftables rules go with them. Succeeds if they do not
exist.
USAGE
}

prefix=csb
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a name}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "teardown.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "teardown.sh: needs root" >&2; exit 2; }
for ns in "$prefix-snd" "$prefix-rcv"; do
  if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
    ip netns del "$ns"
    echo "removed namespace $ns"
  fi
done
