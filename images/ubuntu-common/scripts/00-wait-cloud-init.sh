#!/usr/bin/env bash
# Wait until the installed system's first boot (cloud-init, apt timers) is done before changing packages.
set -euo pipefail

# IMAGE_BUILD_CHROOT=true: the scripts run in a chroot (tests/guest/build-image.sh), not on a booted build VM:
# there is no first boot to wait for (`cloud-init status --wait` would wait forever) and no apt timer.
if [ "${IMAGE_BUILD_CHROOT:-false}" = "true" ]; then
    echo "IMAGE_BUILD_CHROOT=true: no first boot to wait for"
    exit 0
fi

echo "waiting for cloud-init to finish its first boot"
# Exit status 2 means "done, with recoverable errors" (cloud-init >= 23.4); only a hard failure stops the build.
status=0
cloud-init status --wait >/dev/null || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
    cloud-init status --long || true
    echo "cloud-init failed on the build VM (status $status)" >&2
    exit 1
fi

# apt may still be held by unattended-upgrades started at boot.
for _ in $(seq 1 120); do
    if ! fuser /var/lib/dpkg/lock-frontend /var/lib/apt/lists/lock >/dev/null 2>&1; then
        exit 0
    fi
    sleep 5
done
echo "apt/dpkg is still locked after 10 minutes" >&2
exit 1
