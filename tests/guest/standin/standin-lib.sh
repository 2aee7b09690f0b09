# shellcheck shell=bash
# Sourced by the stand-in run.sh and config.sh (tests/guest/standin/): the only fake in the test guest.
# It sits where the GitHub Actions runner would (/opt/actions-runner), records how it was started and what the
# guest looked like at that moment, and never writes a credential anywhere: only its SHA-256.
#
# The record: /opt/actions-runner/_standin/record, one block per invocation, `key=value` lines between
# `begin <program>` and `end <program>`; tests/guest/guest_boot.py reads it from the disk after power-off.
# Per-boot probes are switched on from the kernel command line (runner_standin.probe_eject=1).
set -euo pipefail

STANDIN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECORD_DIR="$STANDIN_DIR/_standin"
RECORD="$RECORD_DIR/record"
JIT_FILE=/var/lib/actions-runner-jit/jitconfig
TOKEN_FILE=/var/lib/actions-runner-jit/registration-token
# Where job code could look for a left-over credential (tmpfs /run included: it is gone after power-off, so
# only this in-guest look can see it). /proc is left out on purpose: the runner's own environment is there.
SCAN_DIRS=(/run /var /etc /tmp /home /root /opt /srv)

mkdir -p "$RECORD_DIR"
problems=()
lines=()

rec() { lines+=("$1=$2"); }
problem() { problems+=("$1"); }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# `sudo -n` works when the image gives the runner user passwordless sudo (the default, like GitHub's runners).
as_root() { sudo -n "$@"; }

record_context() {
    local program=$1 states
    shift
    rec program "$program"
    rec uptime "$(cut -d' ' -f1 /proc/uptime)"
    rec user "$(id -un)"
    rec uid "$(id -u)"
    rec cwd "$PWD"
    rec argc "$#"
    rec env_names "$(env | cut -d= -f1 | grep -E '^[A-Za-z_][A-Za-z0-9_]*$' | sort | tr '\n' ' ')"
    # One sudo for both files (the directory is root-only).
    # shellcheck disable=SC2016 # expanded by the root shell
    if states=$(as_root bash -c 'for f; do if [ -e "$f" ]; then echo yes; else echo no; fi; done' _ \
            "$JIT_FILE" "$TOKEN_FILE" 2>/dev/null); then
        SUDO=yes
        JIT_PRESENT=$(sed -n 1p <<< "$states")
        TOKEN_PRESENT=$(sed -n 2p <<< "$states")
    else
        SUDO=no JIT_PRESENT=unknown TOKEN_PRESENT=unknown
    fi
    rec sudo "$SUDO"
    rec jit_file_present "$JIT_PRESENT"
    rec token_file_present "$TOKEN_PRESENT"
}

# What job code (with sudo) could find: every file under SCAN_DIRS holding the credential, the cloud-init
# drive, and other processes' command lines. The credential reaches grep on standard input only, and one
# `sudo` does all of the root part (every process start is expensive in an emulated guest).
scan_for() {
    local what=$1 credential=$2 line key value
    rec "${what}_sha256" "$(sha "$credential")"
    rec "${what}_length" "${#credential}"
    if [ "$SUDO" = yes ]; then
        # shellcheck disable=SC2016 # expanded by the root shell
        while IFS='=' read -r key value; do
            [ -n "$key" ] && rec "${what}_$key" "$value"
        done < <(printf '%s\n' "$credential" | as_root bash -c '
            credential=$(cat)
            hits=$(grep -rlF --devices=skip -f <(printf "%s\n" "$credential") "$@" 2>/dev/null \
                | grep -v "^$0/" | tr "\n" " ")
            echo "copies_at_job_time=$hits"
            for dev in /dev/sr0 /dev/sr1; do
                [ -b "$dev" ] || continue
                if grep -qaF -f <(printf "%s\n" "$credential") "$dev" 2>/dev/null; then
                    echo "on_${dev##*/}=yes"
                else
                    echo "on_${dev##*/}=no"
                fi
            done' "$RECORD_DIR" "${SCAN_DIRS[@]}")
    else
        rec "${what}_copies_at_job_time" unknown
    fi
    for line in /dev/sr0 /dev/sr1; do
        [ -b "$line" ] || continue
        if head -c 1 "$line" >/dev/null 2>&1; then value=yes; else value=no; fi
        rec "${what}_${line##*/}_readable_without_sudo" "$value"
    done
    # Other processes' command lines (readable by anyone); one grep over all of them.
    # shellcheck disable=SC2062 # a glob of files, not a pattern
    value=$(printf '%s\n' "$credential" | grep -laF -f - /proc/[0-9]*/cmdline 2>/dev/null | grep -cv "^/proc/$$/" || true)
    rec "${what}_in_process_cmdlines" "$value"
}

# runner_standin.probe_eject=1: can the guest take the cloud-init drive away from job code? Eject it, then
# close the tray again (as root, which a job with sudo is) and see whether the credential is readable again.
probe_eject() {
    local credential=$1
    grep -qw 'runner_standin.probe_eject=1' /proc/cmdline || return 0
    [ -b /dev/sr0 ] || { rec eject_probe "no /dev/sr0"; return 0; }
    if as_root eject /dev/sr0 2>/dev/null; then rec eject ok; else rec eject failed; fi
    if printf '%s\n' "$credential" | as_root grep -qaF -f - /dev/sr0 2>/dev/null; then
        rec readable_after_eject yes
    else
        rec readable_after_eject no
    fi
    if as_root eject -t /dev/sr0 2>/dev/null; then rec tray_close ok; else rec tray_close failed; fi
    sleep 1
    if printf '%s\n' "$credential" | as_root grep -qaF -f - /dev/sr0 2>/dev/null; then
        rec readable_after_tray_close yes
    else
        rec readable_after_tray_close no
    fi
}

finish() {
    local program=$1 status=0 line
    if [ "${#problems[@]}" -eq 0 ]; then
        rec result ok
    else
        rec result "FAIL: ${problems[*]}"
        status=1
    fi
    {
        echo "begin $program"
        for line in "${lines[@]}"; do echo "$line"; done
        echo "end $program"
    } >> "$RECORD"
    sync "$RECORD" 2>/dev/null || sync
    # The same record on standard error: the journal (JIT service) or cloud-init's output (registration flow).
    sed -n "/^begin $program\$/,/^end $program\$/p" "$RECORD" | tail -n "$((${#lines[@]} + 2))" | sed 's/^/runner-standin: /' >&2
    sleep 1
    return "$status"
}
