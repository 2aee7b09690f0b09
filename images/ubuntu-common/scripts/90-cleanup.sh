#!/usr/bin/env bash
# Last step: make the VM a template that every clone boots as a fresh machine.
set -euo pipefail
: "${RUNNER_USER:?RUNNER_USER must be set}"
files="${FILES_DIR:-/tmp/runner-files}"

# SSH: key-only from now on; host keys are regenerated at first boot (cloud-init, or the ssh drop-in).
install -d -m 0755 /etc/ssh/sshd_config.d /etc/systemd/system/ssh.service.d
install -m 0644 "$files/10-runner-sshd.conf" /etc/ssh/sshd_config.d/10-runner.conf
install -m 0644 "$files/10-runner-hostkeys.conf" /etc/systemd/system/ssh.service.d/10-runner-hostkeys.conf
rm -f /etc/ssh/ssh_host_*

# The build password of the runner user must not survive in the template.
passwd --lock "$RUNNER_USER" >/dev/null
rm -f /etc/sudoers.d/90-packer-build

# cloud-init runs again, as a new instance, on every clone.
cloud-init clean --logs --seed

# A fresh machine-id on every clone (systemd creates it at first boot when the file is empty).
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

rm -rf "$files" /tmp/* /var/tmp/*
apt-get clean
rm -rf /var/lib/apt/lists/*
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
rm -f /root/.bash_history "/home/$RUNNER_USER/.bash_history"
sync
