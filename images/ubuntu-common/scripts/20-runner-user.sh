#!/usr/bin/env bash
# The non-root user that runs jobs (RUNNER_USER, default "ci"). The installer created it (it is also the
# build's SSH user); make sure it exists and set its sudo rights for the image.
set -euo pipefail
: "${RUNNER_USER:?RUNNER_USER must be set}"
: "${RUNNER_PASSWORDLESS_SUDO:?RUNNER_PASSWORDLESS_SUDO must be set (true or false)}"

if [ "$RUNNER_USER" = "root" ]; then
    echo "RUNNER_USER must not be root" >&2
    exit 1
fi
if ! id "$RUNNER_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$RUNNER_USER"
fi

rule=/etc/sudoers.d/90-actions-runner
if [ "$RUNNER_PASSWORDLESS_SUDO" = "true" ]; then
    # Like GitHub-hosted runners: jobs may install packages. Consequence: a job can read anything on the VM.
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$RUNNER_USER" > "$rule.tmp"
    chmod 0440 "$rule.tmp"
    visudo -cf "$rule.tmp"
    mv "$rule.tmp" "$rule"
else
    rm -f "$rule"
fi

# Environment shared by run-jit.sh and run-once.sh.
install -d -m 0755 /etc/default
printf 'RUNNER_USER=%s\n' "$RUNNER_USER" > /etc/default/actions-runner
chmod 0644 /etc/default/actions-runner
