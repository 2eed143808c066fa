#!/usr/bin/env bash
# Install the Debian packages PVC needs, only those missing, and make /dev/kvm usable by
# QEMU. Safe to run again: it prints a line only for what it changed.
set -euo pipefail

PACKAGES=(
  # the store and the Python build
  zookeeper python3-venv python3-dev gcc pkg-config libvirt-dev
  # systemd-analyze, which checks deploy/systemd's units (a container's Debian lacks it)
  systemd
  # TLS to ZooKeeper: the Netty codec its secure client port loads (not on the Class-Path
  # of Debian's zookeeper.jar, so the local server adds it) and openssl for test certificates
  libnetty-java openssl
  # hypervisor: libvirt's test driver needs only the client library; KVM e2e needs the rest
  libvirt-daemon-system qemu-system-x86 qemu-utils
  # host networking (floating addresses: ip, arping), DHCP and fencing: ipmitool for the
  # ipmi agent, ClusterLabs' fence agents (fence_ipmilan, ...) for the fence-agents agent
  iproute2 iputils-ping dnsmasq busybox arping ipmitool fence-agents
  # storage pools of type rbd: the rbd/ceph commands, QEMU's rbd block driver, libvirt's
  # secrets; and the daemons the tests' single-host Ceph runs (none starts by itself)
  ceph-common qemu-block-extra ceph-mon ceph-mgr ceph-osd
  # promtool, which the tests run on monitoring/prometheus (Debian ships it only in the
  # server's package); the server it brings is left off (see below)
  prometheus
)

KVM_DEVICE=/dev/kvm
KVM_GROUP=kvm
QEMU_USER=libvirt-qemu # the user libvirt runs QEMU as (Debian's libvirt-daemon-system)

install_missing_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0

  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    # Installed here for promtool only: no Prometheus server starts on this host.
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    echo "setup: installed prometheus for its promtool; its server is disabled"
  fi
}

# What Debian's udev rule (KERNEL=="kvm", GROUP="kvm", MODE="0660") does at boot on a
# normal host. Without udev (a container, a minimal VM) /dev/kvm stays root-only 0600,
# and every KVM guest fails: "Could not access KVM kernel module: Permission denied".
make_kvm_usable_by_qemu() {
  [ -c "$KVM_DEVICE" ] || return 0 # no KVM here: guests are emulated (qemu/TCG)
  local before mode changes=()
  before="$(stat -c '%A %U:%G' "$KVM_DEVICE")"
  mode="$(stat -c '%a' "$KVM_DEVICE")"
  local needs_group=0 needs_mode=0 needs_member=0
  getent group "$KVM_GROUP" >/dev/null && [ "$(stat -c '%G' "$KVM_DEVICE")" = "$KVM_GROUP" ] || needs_group=1
  # Group read and write (the 6 in 0660); a wider mode such as 0666 is left as it is.
  (((8#$mode & 8#060) == 8#060)) || needs_mode=1
  if id -u "$QEMU_USER" >/dev/null 2>&1 && ! id -nG "$QEMU_USER" | tr ' ' '\n' | grep -qx "$KVM_GROUP"; then
    needs_member=1
  fi
  [ $((needs_group + needs_mode + needs_member)) -eq 0 ] && return 0

  if [ "$(id -u)" -ne 0 ]; then
    local fix=()
    [ $needs_group -eq 1 ] && fix+=("chgrp $KVM_GROUP $KVM_DEVICE")
    [ $needs_mode -eq 1 ] && fix+=("chmod g+rw $KVM_DEVICE")
    [ $needs_member -eq 1 ] && fix+=("usermod -aG $KVM_GROUP $QEMU_USER")
    local commands
    commands="$(printf '%s; ' "${fix[@]}")"
    echo "setup: QEMU ($QEMU_USER) cannot use KVM ($KVM_DEVICE is $before): run this script" \
      "as root, or as root: ${commands%; }" >&2
    return 0
  fi
  if ! getent group "$KVM_GROUP" >/dev/null; then
    groupadd --system "$KVM_GROUP"
    changes+=("created group $KVM_GROUP")
  fi
  if [ $needs_member -eq 1 ]; then
    usermod -aG "$KVM_GROUP" "$QEMU_USER"
    changes+=("added $QEMU_USER to group $KVM_GROUP")
  fi
  if [ "$(stat -c '%G' "$KVM_DEVICE")" != "$KVM_GROUP" ]; then
    chgrp "$KVM_GROUP" "$KVM_DEVICE"
  fi
  if [ $needs_mode -eq 1 ]; then
    chmod g+rw "$KVM_DEVICE"
  fi
  local device_changed=$((needs_group + needs_mode))
  if [ $device_changed -gt 0 ]; then
    changes+=("$KVM_DEVICE was $before, now $(stat -c '%A %U:%G' "$KVM_DEVICE")")
  fi
  local joined
  joined="$(printf '%s; ' "${changes[@]}")"
  echo "setup: for QEMU ($QEMU_USER) to use KVM: ${joined%; }."
  if [ $device_changed -gt 0 ]; then
    echo "setup: this lasts until the next boot: on a host with udev, Debian's rule" \
      "(KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\") sets it at boot; without udev," \
      "run this script (or make setup) again after each boot."
  fi
}

install_missing_packages
make_kvm_usable_by_qemu
