#!/usr/bin/env bash
# Stand-in for the GitHub Actions runner's run.sh (tests/guest/standin/standin-lib.sh says what it records).
# JIT: the config must arrive in ACTIONS_RUNNER_INPUT_JITCONFIG (or `--jitconfig <cfg>`). Registration flow:
# config.sh must have run first (.runner exists) and no credential is passed.
# shellcheck source-path=SCRIPTDIR source=standin-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/standin-lib.sh"

record_context run.sh "$@"
jit=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
args=("$@")
for i in "${!args[@]}"; do
    if [ "${args[$i]}" = "--jitconfig" ]; then
        jit=${args[$((i + 1))]:-}
        rec jit_from argv
    fi
done
[ -n "${ACTIONS_RUNNER_INPUT_JITCONFIG:-}" ] && rec jit_from environment
if [ -n "$jit" ]; then
    rec mode jit
    [ "$(id -u)" -ne 0 ] || problem "runs as root"
    [ "$JIT_PRESENT" = no ] || problem "the JIT file still exists when the runner starts"
    scan_for jit "$jit"
    probe_eject "$jit"
elif [ -f "$STANDIN_DIR/.runner" ]; then
    rec mode registered
    rec runner_name "$(sed -n 's/^name=//p' "$STANDIN_DIR/.runner")"
    [ "$(id -u)" -ne 0 ] || problem "runs as root"
else
    rec mode none
    problem "neither a JIT config nor a registration (.runner from config.sh)"
fi
unset jit ACTIONS_RUNNER_INPUT_JITCONFIG
rec args "$*"
finish run.sh
