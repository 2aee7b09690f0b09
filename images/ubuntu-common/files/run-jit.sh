#!/usr/bin/env bash
# /opt/actions-runner/run-jit.sh — started as root by actions-runner-jit.service.
#
# Reads the JIT config the dispatcher wrote (images/guest-contract.md), deletes the file, and runs the
# GitHub Actions runner once as the unprivileged runner user. The config is handed to the runner in the
# environment variable ACTIONS_RUNNER_INPUT_JITCONFIG, which the runner reads exactly like
# `run.sh --jitconfig <cfg>` and removes from its own environment; unlike an argument it never shows up
# in `ps` or /proc/<pid>/cmdline for other users. The secret is never printed.
#
# The service's ExecStopPost powers the VM off when this script exits, whatever the exit status.
set -euo pipefail
umask 077

JIT_FILE="${JIT_FILE:-/var/lib/actions-runner-jit/jitconfig}"
RUNNER_DIR="${RUNNER_DIR:-/opt/actions-runner}"
# How long the file's size must stay unchanged before it is read (a writer may still be writing when
# the path unit fires), and how long to wait at most for a non-empty, settled file.
JIT_SETTLE_SECONDS="${JIT_SETTLE_SECONDS:-1}"
JIT_WAIT_SECONDS="${JIT_WAIT_SECONDS:-60}"
# Removes cloud-init's copies of the user-data (snippet injection put the JIT config there too).
SCRUB="${CLOUD_INIT_SCRUB:-$(dirname "$0")/scrub-cloud-init.sh}"

log() { printf 'run-jit: %s\n' "$*" >&2; }

if ! [ "$JIT_SETTLE_SECONDS" -ge 1 ] 2>/dev/null; then
    JIT_SETTLE_SECONDS=1
fi

# The runner user owns the install dir (guest contract); /etc/default/actions-runner may name it.
RUNNER_USER="${RUNNER_USER:-$(stat -c %U "$RUNNER_DIR")}"
if [ "$RUNNER_USER" = "root" ]; then
    log "refusing to run the runner as root (RUNNER_USER=root)"
    exit 1
fi

# Wait until the file exists, is non-empty and its size has settled.
waited=0
last_size=-1
while :; do
    if [ -s "$JIT_FILE" ]; then
        size=$(stat -c %s "$JIT_FILE")
        if [ "$size" -eq "$last_size" ]; then
            break
        fi
        last_size=$size
    fi
    if [ "$waited" -ge "$JIT_WAIT_SECONDS" ]; then
        log "no complete JIT config in $JIT_FILE after ${JIT_WAIT_SECONDS}s"
        rm -f -- "$JIT_FILE"
        exit 1
    fi
    sleep "$JIT_SETTLE_SECONDS"
    waited=$((waited + JIT_SETTLE_SECONDS))
done

# Read, strip all whitespace (a trailing newline is tolerated), delete the file before anything else runs,
# then cloud-init's copies (scrub-cloud-init.sh): no job code can find the config on the VM.
jitconfig=$(tr -d '[:space:]' < "$JIT_FILE")
rm -f -- "$JIT_FILE"
if [ -z "$jitconfig" ]; then
    log "JIT config in $JIT_FILE was empty"
    exit 1
fi
if ! "$SCRUB"; then
    log "could not remove cloud-init's copies of the user-data; not starting the runner"
    exit 1
fi
log "JIT config read (${#jitconfig} bytes) and deleted; starting the runner as $RUNNER_USER"

cd "$RUNNER_DIR"
export ACTIONS_RUNNER_INPUT_JITCONFIG="$jitconfig"
unset jitconfig
status=0
if [ "$(id -un)" = "$RUNNER_USER" ]; then
    ./run.sh || status=$?
else
    # runuser without --login keeps the environment (including the config) and sets HOME/USER/SHELL.
    runuser -u "$RUNNER_USER" -- ./run.sh || status=$?
fi
unset ACTIONS_RUNNER_INPUT_JITCONFIG
log "runner exited with status $status"
exit "$status"
