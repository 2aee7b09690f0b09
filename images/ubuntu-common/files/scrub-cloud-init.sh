#!/usr/bin/env bash
# /opt/actions-runner/scrub-cloud-init.sh — run as root by run-jit.sh and run-once.sh before the runner starts.
#
# With snippet injection the credential (JIT config or registration token) arrives in the user-data, and
# cloud-init keeps copies of that: /var/lib/cloud/instances/<id>/ user-data.txt, user-data.txt.i (the
# processed MIME copy), cloud-config.txt and obj.pkl (the pickled datasource), and the combined cloud-config
# and sensitive instance data under /run/cloud-init. A job with sudo could read them and, with a registration
# token, register runners of its own. They have been consumed; this removes them. The guest boot test
# (tests/guest/) greps a real guest for every copy, at job time and on the disk after power-off.
#
# cloud-init's final stage reads obj.pkl and cloud-config.txt when it starts (for runcmd and power_state);
# removed before that, the stage finds no datasource and does nothing. So those are removed once the final
# stage has started and read them - at once when called from runcmd (registration flow), a few seconds later
# when the path unit started the JIT service first - waiting at most CLOUD_INIT_WAIT_SECONDS (default 300),
# after which they are removed all the same. The cloud-init drive itself stays attached (guest-contract.md).
#
# Environment (tests): CLOUD_INIT_DIR (/var/lib/cloud), CLOUD_INIT_RUN_DIR (/run/cloud-init),
# CLOUD_INIT_LOG (/var/log/cloud-init.log), CLOUD_INIT_WAIT_SECONDS.
set -euo pipefail

lib="${CLOUD_INIT_DIR:-/var/lib/cloud}"
run="${CLOUD_INIT_RUN_DIR:-/run/cloud-init}"
log_file="${CLOUD_INIT_LOG:-/var/log/cloud-init.log}"
wait_seconds="${CLOUD_INIT_WAIT_SECONDS:-300}"

log() { printf 'scrub-cloud-init: %s\n' "$*" >&2; }

removed=()
remove() {
    local f
    for f in "$@"; do
        if [ -e "$f" ] || [ -L "$f" ]; then
            rm -f -- "$f"
            removed+=("$f")
        fi
    done
}

# Has cloud-init's final stage started (and so read its cache)? status.json records each stage's start; its
# keys are sorted, so the first "start" after "modules-final" is that stage's. (No python: every process
# start counts in a slow guest.)
final_started() {
    [ -f "$run/status.json" ] || return 1
    tr -d '\n' < "$run/status.json" | sed -n 's/.*"modules-final": *{//p' \
        | grep -o '"start": *[^,}]*' | head -n 1 | grep -q '[0-9]'
}

shopt -s nullglob
# Never read again after the init stage.
remove "$lib"/instances/*/user-data.txt "$lib"/instances/*/user-data.txt.i

if [ -f "$run/status.json" ]; then
    waited=0
    until final_started; do
        if [ "$waited" -ge "$wait_seconds" ]; then
            log "cloud-init's final stage has not started after ${wait_seconds}s; removing its copies anyway"
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    # The stage logs when it has loaded its cache; give it a moment to get there.
    if [ -f "$log_file" ]; then
        for _ in $(seq 1 15); do
            grep -q 'modules-final/check-cache' "$log_file" && break
            sleep 1
        done
    fi
fi

remove "$lib"/instances/*/cloud-config.txt "$lib"/instances/*/obj.pkl \
       "$run/combined-cloud-config.json" "$run/instance-data-sensitive.json"
log "removed ${#removed[@]} cloud-init copies of the user-data"
