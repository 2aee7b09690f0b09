# shellcheck shell=bash
# Shared logic of images/*/packer-build.sh (sourced, not executed).
#
# Inputs (environment):
#   PROXMOX_URL              API URL incl. /api2/json           (or PKR_VAR_proxmox_url)
#   PROXMOX_USERNAME         API token id, user@realm!tokenname  (or PKR_VAR_proxmox_username)
#   PROXMOX_TOKEN_FILE       file holding the token secret (preferred), else
#   PROXMOX_TOKEN            the token secret                    (or PKR_VAR_proxmox_token)
#   PROXMOX_NODE             node name                           (or PKR_VAR_proxmox_node, default pve)
#   PROXMOX_ISO_STORAGE      storage holding ISOs                (or PKR_VAR_iso_storage_pool, default local)
#   PROXMOX_INSECURE_SKIP_TLS_VERIFY=true   opt-in: accept a self-signed PVE certificate
#   PROXMOX_CA_FILE          CA bundle for the PVE certificate (instead of the opt-in above)
#
# Everything is handed to Packer as PKR_VAR_* variables. The token secret is never printed and never put on
# a command line: curl reads the Authorization header from its standard input (--config -).

pkb_log() { printf 'packer-build: %s\n' "$*" >&2; }
pkb_die() {
    pkb_log "error: $*"
    exit 1
}

# Collects the Proxmox connection settings and exports them as PKR_VAR_*.
pkb_load_settings() {
    PKB_URL="${PROXMOX_URL:-${PKR_VAR_proxmox_url:-}}"
    PKB_USER="${PROXMOX_USERNAME:-${PKR_VAR_proxmox_username:-}}"
    PKB_NODE="${PROXMOX_NODE:-${PKR_VAR_proxmox_node:-pve}}"
    PKB_ISO_STORAGE="${PROXMOX_ISO_STORAGE:-${PKR_VAR_iso_storage_pool:-local}}"
    if [ -n "${PROXMOX_TOKEN_FILE:-}" ]; then
        [ -r "$PROXMOX_TOKEN_FILE" ] || pkb_die "PROXMOX_TOKEN_FILE=$PROXMOX_TOKEN_FILE is not readable"
        PKB_TOKEN=$(tr -d '[:space:]' < "$PROXMOX_TOKEN_FILE")
    else
        PKB_TOKEN="${PROXMOX_TOKEN:-${PKR_VAR_proxmox_token:-}}"
    fi
    [ -n "$PKB_URL" ] || pkb_die "set PROXMOX_URL (e.g. https://pve.example.org:8006/api2/json)"
    [ -n "$PKB_USER" ] || pkb_die "set PROXMOX_USERNAME (API token id, user@realm!tokenname)"
    [ -n "$PKB_TOKEN" ] || pkb_die "set PROXMOX_TOKEN_FILE (or PROXMOX_TOKEN) to the API token secret"
    case "$PKB_URL" in
        http://* | https://*) ;;
        *) pkb_die "PROXMOX_URL must start with https:// (got '$PKB_URL')" ;;
    esac
    PKB_URL="${PKB_URL%/}"

    PKB_CURL_TLS=()
    case "${PROXMOX_INSECURE_SKIP_TLS_VERIFY:-${PKR_VAR_insecure_skip_tls_verify:-false}}" in
        true | 1 | yes)
            PKB_CURL_TLS=(--insecure)
            export PKR_VAR_insecure_skip_tls_verify=true
            pkb_log "TLS certificate verification is OFF (PROXMOX_INSECURE_SKIP_TLS_VERIFY)"
            ;;
        false | 0 | no | "") ;;
        *) pkb_die "PROXMOX_INSECURE_SKIP_TLS_VERIFY must be true or false" ;;
    esac
    if [ -n "${PROXMOX_CA_FILE:-}" ]; then
        PKB_CURL_TLS+=(--cacert "$PROXMOX_CA_FILE")
    fi

    export PKR_VAR_proxmox_url="$PKB_URL"
    export PKR_VAR_proxmox_username="$PKB_USER"
    export PKR_VAR_proxmox_token="$PKB_TOKEN"
    export PKR_VAR_proxmox_node="$PKB_NODE"
    export PKR_VAR_iso_storage_pool="$PKB_ISO_STORAGE"
}

# GET <path below /api2/json>; prints the response body. The token travels on curl's stdin only.
pkb_api_get() {
    local path=$1
    printf 'header = "Authorization: PVEAPIToken=%s=%s"\n' "$PKB_USER" "$PKB_TOKEN" |
        curl --fail --silent --show-error --max-time 30 "${PKB_CURL_TLS[@]}" --config - "${PKB_URL}${path}"
}

# Prints the volid (e.g. local:iso/name.iso) of the ISO called <file name> on the ISO storage, if any.
pkb_find_iso() {
    local name=$1 body
    body=$(pkb_api_get "/nodes/${PKB_NODE}/storage/${PKB_ISO_STORAGE}/content?content=iso") ||
        pkb_die "cannot list ISOs on storage '${PKB_ISO_STORAGE}' of node '${PKB_NODE}'"
    printf '%s' "$body" | python3 -c '
import json, sys
name = sys.argv[1]
for item in json.load(sys.stdin).get("data") or []:
    volid = item.get("volid", "")
    if volid.split(":", 1)[-1] == "iso/" + name:
        print(volid)
        break
' "$name"
}

# pkb_resolve_iso <variable prefix> <ISO file name> <download URL or empty>
# Reuses the ISO if it is on the storage (exports PKR_VAR_<prefix>_file), else has Packer/Proxmox download
# it (exports PKR_VAR_<prefix>_url and an empty PKR_VAR_<prefix>_file).
pkb_resolve_iso() {
    local prefix=$1 name=$2 url=$3 volid file_var url_var
    file_var="PKR_VAR_${prefix}_file"
    url_var="PKR_VAR_${prefix}_url"
    if [ -n "${!file_var:-}" ]; then
        pkb_log "using ${file_var}=${!file_var} as given"
        return 0
    fi
    volid=$(pkb_find_iso "$name")
    if [ -n "$volid" ]; then
        pkb_log "reusing ${volid} from storage ${PKB_ISO_STORAGE}"
        export "${file_var}=${volid}"
        unset "${url_var}"
    elif [ -n "$url" ]; then
        pkb_log "${name} is not on storage ${PKB_ISO_STORAGE}; it will be downloaded from ${url}"
        export "${file_var}="
        export "${url_var}=${url}"
    else
        pkb_die "${name} is not on storage ${PKB_ISO_STORAGE} of node ${PKB_NODE}, and no URL to download it was given"
    fi
}

# pkb_packer <template dir> [packer build arguments...]: packer init, then packer build.
pkb_packer() {
    local dir=$1
    shift
    command -v packer >/dev/null 2>&1 || pkb_die "packer is not installed"
    packer init "$dir"
    packer build "$@" "$dir"
}
