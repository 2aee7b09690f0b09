#!/usr/bin/env bash
# Build tooling, the QEMU guest agent and cloud-init.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get -y -o Dpkg::Options::=--force-confold dist-upgrade
apt-get install -y --no-install-recommends \
    build-essential cmake git curl ca-certificates jq unzip zip xz-utils \
    python3 python3-pip python3-venv \
    qemu-guest-agent cloud-init cloud-guest-utils openssh-server sudo

# The Proxmox "Guest Agent" option (qemu_agent = true) needs qemu-ga running in every clone. On Ubuntu the
# unit is started by udev when the virtio-serial port appears; enable it too where the unit allows it.
systemctl enable qemu-guest-agent >/dev/null 2>&1 || true
# IMAGE_BUILD_CHROOT=true (tests/guest/build-image.sh): nothing runs in a chroot; the guest boot test checks
# that the agent answers in a booted clone instead.
if [ "${IMAGE_BUILD_CHROOT:-false}" != "true" ]; then
    systemctl start qemu-guest-agent
    systemctl is-active --quiet qemu-guest-agent
fi

# Unattended upgrades in a one-job VM only compete with the job for the dpkg lock. One unit at a time: a unit
# the release does not have (Debian without unattended-upgrades) must not keep the others enabled.
for unit in unattended-upgrades.service apt-daily.timer apt-daily-upgrade.timer; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
done

apt-get -y autoremove --purge
apt-get clean
