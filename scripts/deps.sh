#!/usr/bin/env bash
# Installs the Debian packages podnet's lab, tests and benchmarks use,
# only those missing, so it is cheap to run before every make target.
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want ip iproute2
want ping iputils-ping
want iperf3 iperf3
want nc netcat-openbsd
want tcpdump tcpdump
want ethtool ethtool
want bird bird2
want nft nftables
want tshark tshark
# The CNI plugin's tests: podman with its CNI backend, run by runc (crun
# refuses hybrid cgroup hierarchies), containers from a static busybox.
want podman podman
want runc runc
want nsenter util-linux
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
  need+=(busybox-static)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing tools (${need[*]}) and no apt-get to install them; install them by hand" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${need[*]} — run as root (sudo) so they can be installed" >&2
  exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
