#!/usr/bin/env bash
# Stand-in for the GitHub Actions runner's config.sh (registration-token flow, run-once.sh): checks the flags
# an ephemeral unattended registration needs and that the token came in ACTIONS_RUNNER_INPUT_TOKEN, never in
# argv; writes .runner (no secret) for run.sh. See standin-lib.sh.
# shellcheck source-path=SCRIPTDIR source=standin-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/standin-lib.sh"

record_context config.sh "$@"
token=${ACTIONS_RUNNER_INPUT_TOKEN:-}
url="" name="" labels="" flags=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --url) url=${2:-}; shift ;;
        --name) name=${2:-}; shift ;;
        --labels) labels=${2:-}; shift ;;
        --token) problem "token passed in argv"; token=${2:-}; shift ;;
        --work) shift ;;
        --*) flags="$flags ${1#--}" ;;
        *) problem "unexpected argument" ;;
    esac
    shift
done
rec url "$url"
rec name "$name"
rec labels "$labels"
rec flags "${flags# }"
for flag in unattended ephemeral; do
    case " $flags " in *" $flag "*) ;; *) problem "missing --$flag" ;; esac
done
[ -n "$url" ] || problem "missing --url"
[ -n "$name" ] || problem "missing --name"
[ "$(id -u)" -ne 0 ] || problem "runs as root"
if [ -n "$token" ]; then
    rec mode registration-token
    [ "$TOKEN_PRESENT" = no ] || problem "the token file still exists when config.sh runs"
    scan_for token "$token"
    probe_eject "$token"
    printf 'name=%s\nurl=%s\n' "$name" "$url" > "$STANDIN_DIR/.runner"
else
    rec mode none
    problem "no registration token"
fi
unset token ACTIONS_RUNNER_INPUT_TOKEN
finish config.sh
