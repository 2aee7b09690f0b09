#!/usr/bin/env bash
# The credential hand-over described in images/guest-contract.md: the JIT path/service units and
# run-jit.sh, plus the seed flow's run-once.sh, and scrub-cloud-init.sh which both call. Expects the files
# uploaded to $FILES_DIR.
set -euo pipefail
: "${RUNNER_USER:?RUNNER_USER must be set}"
files="${FILES_DIR:-/tmp/runner-files}"
runner_dir=/opt/actions-runner

install -m 0755 -o root -g root "$files/run-jit.sh" "$runner_dir/run-jit.sh"
install -m 0755 -o root -g root "$files/run-once.sh" "$runner_dir/run-once.sh"
install -m 0755 -o root -g root "$files/scrub-cloud-init.sh" "$runner_dir/scrub-cloud-init.sh"

# The directory the dispatcher writes into: root only (the guest agent writes as root).
install -d -m 0700 -o root -g root /var/lib/actions-runner-jit

install -m 0644 -o root -g root "$files/actions-runner-jit.path" /etc/systemd/system/actions-runner-jit.path
install -m 0644 -o root -g root "$files/actions-runner-jit.service" /etc/systemd/system/actions-runner-jit.service
install -m 0644 -o root -g root "$files/actions-runner-poweroff.service" \
    /etc/systemd/system/actions-runner-poweroff.service
# IMAGE_BUILD_CHROOT=true (tests/guest/build-image.sh): no systemd runs in the chroot; enabling works offline.
if [ "${IMAGE_BUILD_CHROOT:-false}" != "true" ]; then
    systemctl daemon-reload
fi
systemctl enable actions-runner-jit.path
# The service itself is started only by the path unit (or by the snippet's runcmd); never at boot.
systemctl disable actions-runner-jit.service >/dev/null 2>&1 || true
