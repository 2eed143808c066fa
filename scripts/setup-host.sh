#!/usr/bin/env bash
# Install the Debian packages PVC needs, only those missing. Safe to run again.
set -euo pipefail

PACKAGES=(
  # the store and the Python build
  zookeeper python3-venv python3-dev gcc pkg-config libvirt-dev
  # hypervisor: libvirt's test driver needs only the client library; KVM e2e needs the rest
  libvirt-daemon-system qemu-system-x86 qemu-utils
  # host networking (floating addresses: ip, arping), DHCP and fencing
  iproute2 iputils-ping dnsmasq busybox arping ipmitool
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
