#!/usr/bin/env bash
# /opt/actions-runner/run-once.sh — the seed's registration-token flow, fixed.
#
# Usage: run-once.sh <repo_url> <registration_token | @FILE> <runner_name> [labels]
#
# Registers an ephemeral runner (one job, then GitHub removes it), runs it, and returns the runner's exit
# status. Called as root from cloud-init runcmd by cloud-init/runner-user-data.pkrtpl; cloud-init's
# power_state then powers the VM off.
#
# Fixes over the seed:
#   * `@FILE` reads the token from FILE and deletes it, so the token is never in cloud-init's runcmd nor in
#     any process argument list. A literal token argument still works for old templates (with a warning).
#   * The token reaches config.sh in ACTIONS_RUNNER_INPUT_TOKEN (the runner's environment equivalent of
#     --token), never as an argument; the token is never echoed.
#   * --ephemeral --unattended --disableupdate are passed to config.sh, which is where the runner reads
#     them (run.sh does not know --disableupdate).
#   * cloud-init's copies of the user-data (and so of the token) are removed before the runner starts.
#   * No `config.sh remove` afterwards: removal needs a removal token, not the registration token, and an
#     ephemeral runner is deregistered by GitHub after its job anyway.
set -euo pipefail
umask 077

log() { printf 'run-once: %s\n' "$*" >&2; }

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
    log "usage: run-once.sh <repo_url> <registration_token|@FILE> <runner_name> [labels]"
    exit 2
fi
repo_url=$1
token_arg=$2
runner_name=$3
labels=${4:-}

RUNNER_DIR="${RUNNER_DIR:-/opt/actions-runner}"
if [ -z "${RUNNER_USER:-}" ] && [ -r /etc/default/actions-runner ]; then
    # shellcheck source=/dev/null
    . /etc/default/actions-runner
fi
RUNNER_USER="${RUNNER_USER:-$(stat -c %U "$RUNNER_DIR")}"
if [ "$RUNNER_USER" = "root" ]; then
    log "refusing to run the runner as root (RUNNER_USER=root)"
    exit 1
fi

case "$token_arg" in
    @*)
        token_file=${token_arg#@}
        if [ ! -s "$token_file" ]; then
            log "registration token file $token_file is missing or empty"
            exit 1
        fi
        token=$(tr -d '[:space:]' < "$token_file")
        rm -f -- "$token_file"
        ;;
    *)
        log "warning: registration token passed as an argument; pass @FILE instead"
        token=$token_arg
        ;;
esac
if [ -z "$token" ]; then
    log "empty registration token"
    exit 1
fi

# cloud-init keeps copies of the user-data, which held the token, under /var/lib/cloud and /run/cloud-init:
# remove them before the job can run (scrub-cloud-init.sh; a registration token stays valid for an hour).
if ! "${CLOUD_INIT_SCRUB:-$(dirname "$0")/scrub-cloud-init.sh}"; then
    log "could not delete cloud-init's copies of the user-data; not registering"
    exit 1
fi

as_runner() {
    if [ "$(id -un)" = "$RUNNER_USER" ]; then
        "$@"
    else
        runuser -u "$RUNNER_USER" -- "$@"
    fi
}

cd "$RUNNER_DIR"
config_args=(--unattended --ephemeral --disableupdate --replace
             --url "$repo_url" --name "$runner_name" --work _work)
if [ -n "$labels" ]; then
    config_args+=(--labels "$labels")
fi

log "registering ephemeral runner $runner_name for $repo_url as $RUNNER_USER"
export ACTIONS_RUNNER_INPUT_TOKEN="$token"
unset token
as_runner ./config.sh "${config_args[@]}"
unset ACTIONS_RUNNER_INPUT_TOKEN

status=0
as_runner ./run.sh || status=$?
log "runner exited with status $status"
exit "$status"
