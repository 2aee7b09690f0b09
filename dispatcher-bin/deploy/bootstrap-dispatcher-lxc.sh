#!/usr/bin/env bash
# bootstrap-dispatcher-lxc.sh — install or update the GitHub Actions runner dispatcher in an unprivileged
# Debian LXC container on a Proxmox VE host. Run it on the host, as root.
#
#   dispatcher-bin/deploy/bootstrap-dispatcher-lxc.sh [--env-file FILE] [--ctid N] [--hostname NAME]
#       [--binary PATH] [--pools FILE] [--templates DIR] [--recreate] [--dry-run]
#
# Configuration comes from dispatcher.env next to this script (or --env-file FILE), read as data: one
# KEY=VALUE per line, an optional leading `export`, surrounding single or double quotes stripped, no shell
# expansion, no escapes. A non-empty variable in this script's environment overrides the file.
#
# What it does (every step is idempotent; a second run updates the binary and configuration and restarts the
# service; an existing container is never destroyed unless --recreate is given):
#   1. builds the dispatcher (`cargo build --release -p dispatcher-bin`) unless --binary is given;
#   2. finds or creates the container: CTID from --ctid / CTID, else the container named CT_HOSTNAME, else the
#      cluster's next free id; a CTID that exists with another hostname is refused (unless --recreate);
#      a new container is unprivileged with nesting=1 from the newest Debian 13/12 standard template
#      (`pveam update/available/download`) or from CT_TEMPLATE_FILE as is;
#   3. when a pool uses snippet injection (RUNNER_INJECTION, default snippet, and the pools file): makes sure
#      PROXMOX_STORAGE (default ghr-snippets) is a dedicated snippets storage — created with
#      `pvesm add dir <id> --path /var/lib/<id> --content snippets` when it does not exist; refused (one line,
#      before anything changes) when it is not a directory storage, is disabled, has any content type besides
#      snippets, lives in /var/lib/vz or shares its directory with another storage, or when its snippets
#      directory holds files the container's dispatcher user does not own (hookscripts, other VMs' cloud-init
#      files) — then bind-mounts that directory at SNIPPETS_DIR and gives the container's `dispatcher` user
#      (uid DISPATCHER_UID) write access by owning it with the mapped host id (CT_IDMAP_BASE + uid; 100000
#      with Proxmox's default unprivileged map). With agent injection only: no storage and no bind mount (one
#      a previous run made is removed);
#   4. installs /usr/local/bin/dispatcher, dispatcherctl, the pools file, user-data templates, the CA file /
#      GitHub App key when given as host files, /etc/default/dispatcher (0600, written from a 0600 temp file
#      with `pct push` — no secret ever appears on a command line) and dispatcher.service;
#   5. `systemctl daemon-reload`, `enable`, `restart`, and prints how to follow the logs.
set -euo pipefail
umask 077

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

# Every variable the dispatcher reads (DESIGN §2.2) plus RUST_LOG: each one that is set goes into
# /etc/default/dispatcher.
DISPATCHER_VARS=(
    PROXMOX_URL PROXMOX_NODE PROXMOX_TOKEN_ID PROXMOX_TOKEN_SECRET PROXMOX_STORAGE PROXMOX_VERIFY_SSL
    PROXMOX_CA_CERT PROXMOX_TLS_FINGERPRINT
    GITHUB_TOKEN GITHUB_APP_ID GITHUB_APP_INSTALLATION_ID GITHUB_APP_PRIVATE_KEY_FILE GITHUB_API_URL GITHUB_ORG
    GITHUB_REPOSITORIES
    MAX_TOTAL_RUNNERS DISABLE_CLEANUP PAUSE_ON_STOPPED REPO_OWNER REPO_NAME REPO_URL POLL_INTERVAL
    RUNNER_POOLS_CONFIG SNIPPETS_DIR TEMPLATE_NAME RUNNER_ID_START RUNNER_ID_END RUNNER_NAME_PREFIX RUNNER_USER
    RUNNER_LABELS USER_DATA_TEMPLATE RUNNER_GROUP_ID RUNNER_INJECTION DEBUG_LOGGING WEBHOOK_SECRET LISTEN_ADDR METRICS_ADDR ALLOW_INSECURE_HTTP DISPATCHER_ID
    LOG_FORMAT RUST_LOG
)
# Variables only this script uses (never written into the container).
BOOTSTRAP_VARS=(
    CTID CT_HOSTNAME CT_STORAGE CT_DISK_GB CT_MEMORY CT_CORES CT_NET0 CT_TEMPLATE_STORAGE CT_TEMPLATE_FILE
    CT_ROOT_PASSWORD HOST_SNIPPETS_DIR DISPATCHER_UID CT_IDMAP_BASE
)

DEFAULT_SNIPPETS_DIR=/opt/dispatcher/snippets
DEFAULT_SNIPPET_STORAGE=ghr-snippets
# A snippets storage this script creates lives at $SNIPPET_STORAGE_BASE/<id>.
SNIPPET_STORAGE_BASE=/var/lib
# The cluster's storage definitions (PVE_STORAGE_CFG: for tests).
STORAGE_CFG=${PVE_STORAGE_CFG:-/etc/pve/storage.cfg}
CT_BASE=/opt/dispatcher
CT_POOLS=$CT_BASE/runner-pools.json
CT_TEMPLATES=$CT_BASE/templates
CT_ETC=/etc/dispatcher
CT_ENV_FILE=/etc/default/dispatcher
CT_UNIT=/etc/systemd/system/dispatcher.service
CT_DROPIN_DIR=/etc/systemd/system/dispatcher.service.d
CT_BIN=/usr/local/bin/dispatcher
PVE_ROOT_CA=/etc/pve/pve-root-ca.pem

declare -A CFG=()
ENV_FILE=""
ENV_FILE_GIVEN=0
OPT_CTID=""
OPT_HOSTNAME=""
OPT_BINARY=""
OPT_POOLS=""
OPT_TEMPLATES=""
RECREATE=0
DRY_RUN=0
TMP_DIR=""

log() { printf 'bootstrap: %s\n' "$*" >&2; }
warn() { printf 'bootstrap: warning: %s\n' "$*" >&2; }
die() {
    printf 'bootstrap: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<'USAGE'
Usage: bootstrap-dispatcher-lxc.sh [options]

Install or update the dispatcher in an unprivileged LXC container (run on the Proxmox VE host as root).

Options:
  --env-file FILE   configuration (default: dispatcher.env next to this script, if present)
  --ctid N          container id (default: CTID, else the container named --hostname, else the next free id)
  --hostname NAME   container hostname (default: CT_HOSTNAME, else gha-dispatcher)
  --binary PATH     install this dispatcher binary instead of building it with cargo
  --pools FILE      pools file to install as /opt/dispatcher/runner-pools.json
                    (default: runner-pools.json next to the env file, if present)
  --templates DIR   user-data templates to install under /opt/dispatcher/templates/
                    (default: templates/ next to the env file, if present)
  --recreate        destroy and recreate the container (its data is lost; the host snippets stay)
  --dry-run         show what would be done; change nothing
  -h, --help        this help
USAGE
}

cleanup() {
    if [[ -n $TMP_DIR && -d $TMP_DIR ]]; then
        rm -rf -- "$TMP_DIR"
    fi
}
trap cleanup EXIT

# Runs a command that changes something; in --dry-run mode only shows it. No secret is ever an argument.
run() {
    if ((DRY_RUN)); then
        printf 'bootstrap: [dry-run] would run:' >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
        return 0
    fi
    "$@"
}

contains() {
    local needle=$1
    shift
    local item
    for item in "$@"; do
        [[ $item == "$needle" ]] && return 0
    done
    return 1
}

is_known_var() {
    contains "$1" "${DISPATCHER_VARS[@]}" || contains "$1" "${BOOTSTRAP_VARS[@]}"
}

# Value of a configuration variable ("" when unset).
cfg() { printf '%s' "${CFG[$1]:-}"; }

# Strips surrounding whitespace and one pair of matching quotes.
strip_value() {
    local v=$1
    v=${v#"${v%%[![:space:]]*}"}
    v=${v%"${v##*[![:space:]]}"}
    if ((${#v} >= 2)); then
        if [[ ${v:0:1} == '"' && ${v: -1} == '"' ]] || [[ ${v:0:1} == "'" && ${v: -1} == "'" ]]; then
            v=${v:1:${#v}-2}
        fi
    fi
    printf '%s' "$v"
}

# Reads KEY=VALUE lines as data (never `source`d). Unknown keys are reported by name only.
load_env_file() {
    local file=$1 line key n=0
    [[ -r $file ]] || die "cannot read env file $file"
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        if [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=(.*)$ ]]; then
            key=${BASH_REMATCH[2]}
            if ! is_known_var "$key"; then
                warn "$file:$n: unknown variable $key ignored (typo?)"
                continue
            fi
            CFG[$key]=$(strip_value "${BASH_REMATCH[3]}")
        else
            die "$file:$n: expected KEY=VALUE"
        fi
    done <"$file"
}

# Non-empty environment variables override the file.
load_environment() {
    local key
    for key in "${DISPATCHER_VARS[@]}" "${BOOTSTRAP_VARS[@]}"; do
        if [[ -n ${!key:-} ]]; then
            if [[ -n ${CFG[$key]:-} && ${CFG[$key]} != "${!key}" ]]; then
                log "$key: the environment overrides the env file"
            fi
            CFG[$key]=${!key}
        fi
    done
}

validate_config() {
    local key missing=()
    for key in "${!CFG[@]}"; do
        [[ ${CFG[$key]} == *$'\n'* ]] && die "$key: the value must be a single line"
    done
    for key in PROXMOX_URL PROXMOX_NODE PROXMOX_TOKEN_ID PROXMOX_TOKEN_SECRET; do
        [[ -n $(cfg "$key") ]] || missing+=("$key")
    done
    if [[ -z $(cfg GITHUB_TOKEN) ]]; then
        local app_missing=()
        for key in GITHUB_APP_ID GITHUB_APP_INSTALLATION_ID GITHUB_APP_PRIVATE_KEY_FILE; do
            [[ -n $(cfg "$key") ]] || app_missing+=("$key")
        done
        if ((${#app_missing[@]})); then
            missing+=("GITHUB_TOKEN (or ${app_missing[*]})")
        fi
    fi
    if ((${#missing[@]})); then
        die "missing required setting(s): ${missing[*]}"
    fi
    [[ $(cfg PROXMOX_URL) =~ ^https?://[^[:space:]]+$ ]] || die "PROXMOX_URL=$(cfg PROXMOX_URL): expected an http(s) URL"
    local snippets
    snippets=$(cfg SNIPPETS_DIR)
    [[ $snippets =~ ^/[A-Za-z0-9._/-]+$ ]] || die "SNIPPETS_DIR=$snippets: expected an absolute path without spaces"
    for key in CTID CT_DISK_GB CT_MEMORY CT_CORES DISPATCHER_UID CT_IDMAP_BASE; do
        [[ -z $(cfg "$key") || $(cfg "$key") =~ ^[0-9]+$ ]] || die "$key=$(cfg "$key"): expected a number"
    done
    [[ $(cfg CT_HOSTNAME) =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] ||
        die "CT_HOSTNAME=$(cfg CT_HOSTNAME): expected a DNS host name"
}

parse_args() {
    while (($#)); do
        case $1 in
        --env-file) (($# >= 2)) || die "--env-file needs a value"; ENV_FILE=$2; ENV_FILE_GIVEN=1; shift 2 ;;
        --ctid) (($# >= 2)) || die "--ctid needs a value"; OPT_CTID=$2; shift 2 ;;
        --hostname) (($# >= 2)) || die "--hostname needs a value"; OPT_HOSTNAME=$2; shift 2 ;;
        --binary) (($# >= 2)) || die "--binary needs a value"; OPT_BINARY=$2; shift 2 ;;
        --pools) (($# >= 2)) || die "--pools needs a value"; OPT_POOLS=$2; shift 2 ;;
        --templates) (($# >= 2)) || die "--templates needs a value"; OPT_TEMPLATES=$2; shift 2 ;;
        --recreate) RECREATE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
}

load_config() {
    if ((ENV_FILE_GIVEN)); then
        [[ -f $ENV_FILE ]] || die "env file $ENV_FILE not found"
    elif [[ -f $SCRIPT_DIR/dispatcher.env ]]; then
        ENV_FILE=$SCRIPT_DIR/dispatcher.env
    fi
    if [[ -n $ENV_FILE ]]; then
        ENV_FILE=$(cd "$(dirname "$ENV_FILE")" && pwd)/$(basename "$ENV_FILE")
        log "reading $ENV_FILE"
        load_env_file "$ENV_FILE"
    else
        log "no dispatcher.env found; using the environment only"
    fi
    load_environment
    [[ -n $OPT_CTID ]] && CFG[CTID]=$OPT_CTID
    [[ -n $OPT_HOSTNAME ]] && CFG[CT_HOSTNAME]=$OPT_HOSTNAME
    : "${CFG[CT_HOSTNAME]:=gha-dispatcher}"
    : "${CFG[SNIPPETS_DIR]:=$DEFAULT_SNIPPETS_DIR}"
    : "${CFG[PROXMOX_STORAGE]:=$DEFAULT_SNIPPET_STORAGE}"
    : "${CFG[CT_TEMPLATE_STORAGE]:=local}"
    : "${CFG[CT_DISK_GB]:=4}"
    : "${CFG[CT_MEMORY]:=512}"
    : "${CFG[CT_CORES]:=1}"
    : "${CFG[CT_NET0]:=name=eth0,bridge=vmbr0,ip=dhcp}"
    : "${CFG[DISPATCHER_UID]:=990}"
    : "${CFG[CT_IDMAP_BASE]:=100000}"
    validate_config
}

# ------------------------------------------------------------------------------------------- host side

build_or_find_binary() {
    if [[ -n $OPT_BINARY ]]; then
        [[ -f $OPT_BINARY && -x $OPT_BINARY ]] || die "--binary $OPT_BINARY: not an executable file"
        BINARY=$OPT_BINARY
        return
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust (https://rustup.rs) or build elsewhere and pass --binary PATH"
    log "building the dispatcher (cargo build --release -p dispatcher-bin)"
    (cd "$REPO_ROOT" && cargo build --release --locked -p dispatcher-bin)
    local target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
    [[ $target == /* ]] || target=$REPO_ROOT/$target
    BINARY=$target/release/dispatcher
    [[ -x $BINARY ]] || die "the build did not produce $BINARY"
}

resolve_inputs() {
    local base_dir=$SCRIPT_DIR
    [[ -n $ENV_FILE ]] && base_dir=$(dirname "$ENV_FILE")
    POOLS_FILE=$OPT_POOLS
    if [[ -z $POOLS_FILE && -f $base_dir/runner-pools.json ]]; then
        POOLS_FILE=$base_dir/runner-pools.json
    fi
    if [[ -n $POOLS_FILE ]]; then
        [[ -f $POOLS_FILE ]] || die "--pools $POOLS_FILE: file not found"
    fi
    TEMPLATES_DIR=$OPT_TEMPLATES
    if [[ -z $TEMPLATES_DIR && -d $base_dir/templates ]]; then
        TEMPLATES_DIR=$base_dir/templates
    fi
    if [[ -n $TEMPLATES_DIR ]]; then
        [[ -d $TEMPLATES_DIR ]] || die "--templates $TEMPLATES_DIR: not a directory"
    fi
    UNIT_FILE=$SCRIPT_DIR/dispatcher.service
    CTL_FILE=$SCRIPT_DIR/dispatcherctl
    [[ -f $UNIT_FILE ]] || die "$UNIT_FILE is missing"
    [[ -f $CTL_FILE ]] || die "$CTL_FILE is missing"
}

# CTID: option/env, else the container with our hostname, else the next free id.
resolve_ctid() {
    CTID=$(cfg CTID)
    if [[ -z $CTID ]]; then
        CTID=$(pct list | awk -v h="$(cfg CT_HOSTNAME)" 'NR > 1 && $NF == h { print $1; exit }')
        if [[ -n $CTID ]]; then
            log "found container $CTID named $(cfg CT_HOSTNAME)"
        else
            CTID=$(pvesh get /cluster/nextid | tr -d '"[:space:]')
            [[ $CTID =~ ^[0-9]+$ ]] || die "pvesh get /cluster/nextid returned no id"
            log "using the next free id $CTID"
        fi
    fi
}

ct_exists() { pct config "$CTID" >/dev/null 2>&1; }
ct_running() { pct status "$CTID" 2>/dev/null | grep -q 'status: running'; }
ct_config_value() { pct config "$CTID" 2>/dev/null | awk -v k="$1:" '$1 == k { sub(/^[^:]*: /, ""); print; exit }'; }

# Runs a command inside the container (stdin closed: pct exec forwards stdin).
ct_exec() { pct exec "$CTID" -- "$@" </dev/null; }

ensure_template() {
    if [[ -n $(cfg CT_TEMPLATE_FILE) ]]; then
        TEMPLATE_REF=$(cfg CT_TEMPLATE_FILE)
        [[ -f $TEMPLATE_REF ]] || die "CT_TEMPLATE_FILE=$TEMPLATE_REF: file not found"
        log "using the container template $TEMPLATE_REF as is"
        return
    fi
    local storage newest local_list present
    storage=$(cfg CT_TEMPLATE_STORAGE)
    if ((!DRY_RUN)); then
        pveam update >&2 || warn "pveam update failed; using the cached template index"
    fi
    newest=$(pveam available --section system 2>/dev/null | awk '{ print $2 }' |
        grep -E '^debian-1[23]-standard_[^ ]+\.tar\.(zst|gz|xz)$' | sort -V | tail -n 1 || true)
    local_list=$(pveam list "$storage" 2>/dev/null | awk 'NR > 1 { print $1 }' | sed 's#^.*:vztmpl/##' || true)
    if [[ -z $newest ]]; then
        newest=$(printf '%s\n' "$local_list" | grep -E '^debian-1[23]-standard_' | sort -V | tail -n 1 || true)
        [[ -n $newest ]] || die "no Debian 12/13 standard template available (pveam available --section system) or present on $storage; set CT_TEMPLATE_FILE"
    fi
    present=0
    if printf '%s\n' "$local_list" | grep -qxF "$newest"; then present=1; fi
    if ((present)); then
        log "template $storage:vztmpl/$newest is present"
    else
        log "downloading template $newest to $storage"
        run pveam download "$storage" "$newest"
    fi
    TEMPLATE_REF=$storage:vztmpl/$newest
}

rootfs_storage() {
    local s
    s=$(cfg CT_STORAGE)
    if [[ -z $s ]]; then
        local list
        list=$(pvesm status --content rootdir 2>/dev/null | awk 'NR > 1 && $3 == "active" { print $1 }' || true)
        if printf '%s\n' "$list" | grep -qx 'local-lvm'; then
            s=local-lvm
        else
            s=$(printf '%s\n' "$list" | head -n 1)
        fi
        [[ -n $s ]] || die "no active storage with rootdir content found; set CT_STORAGE"
    fi
    printf '%s' "$s"
}

create_container() {
    ensure_template
    local storage
    storage=$(rootfs_storage)
    log "creating unprivileged container $CTID ($(cfg CT_HOSTNAME)) on $storage"
    run pct create "$CTID" "$TEMPLATE_REF" \
        --hostname "$(cfg CT_HOSTNAME)" \
        --unprivileged 1 \
        --features nesting=1 \
        --ostype debian \
        --cores "$(cfg CT_CORES)" \
        --memory "$(cfg CT_MEMORY)" \
        --swap 256 \
        --rootfs "$storage:$(cfg CT_DISK_GB)" \
        --net0 "$(cfg CT_NET0)" \
        --onboot 1 \
        --tags ghr-dispatcher \
        --description "GitHub Actions runner dispatcher (bootstrap-dispatcher-lxc.sh)"
}

ensure_container() {
    if ct_exists; then
        local existing
        existing=$(ct_config_value hostname)
        if ((RECREATE)); then
            log "--recreate: destroying container $CTID ($existing)"
            if ct_running; then run pct stop "$CTID"; fi
            run pct destroy "$CTID" --purge 1
            create_container
            CREATED=1
        elif [[ $existing != "$(cfg CT_HOSTNAME)" ]]; then
            die "container $CTID exists with hostname '$existing', not '$(cfg CT_HOSTNAME)': choose another --ctid, the matching --hostname, or --recreate"
        else
            log "container $CTID ($existing) exists: updating it"
            [[ $(ct_config_value unprivileged) == 1 ]] || warn "container $CTID is privileged; an unprivileged one is recommended (--recreate)"
            CREATED=0
        fi
    else
        create_container
        CREATED=1
    fi
}

# ------------------------------------------------------------------------------------ snippet storage

# The storages of storage.cfg, one per line: id, type, path, content, disabled (tab-separated).
storage_table() {
    [[ -r $STORAGE_CFG ]] || die "cannot read $STORAGE_CFG: run this on a Proxmox VE host"
    awk '
        function flush() { if (id != "") printf "%s\t%s\t%s\t%s\t%s\n", id, type, path, content, disable }
        /^[a-z0-9]+:[ \t]+[^ \t]+[ \t]*$/ {
            flush(); type = $1; sub(/:$/, "", type); id = $2; path = ""; content = ""; disable = 0; next
        }
        /^[ \t]+[^ \t]/ && id != "" {
            key = $1; val = $0
            sub(/^[ \t]*[^ \t]+[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
            if (key == "path") path = val
            else if (key == "content") content = val
            else if (key == "disable") disable = (val == "" || val == "1") ? 1 : 0
        }
        END { flush() }
    ' "$STORAGE_CFG"
}

# The snippet storages the pools use, one per line: the pools file's pools (perl's JSON::PP: Proxmox VE is
# Perl) whose injection (default RUNNER_INJECTION, else snippet) is not agent, with their `storage` (default
# PROXMOX_STORAGE). Without a pools file here: the one pool of the RUNNER_* variables. A pools file that cannot
# be read counts as snippet injection on PROXMOX_STORAGE (the dispatcher reports the file itself).
snippet_storages() {
    local injection storage
    injection=$(cfg RUNNER_INJECTION)
    injection=${injection,,}
    [[ $injection == agent ]] || injection=snippet
    storage=$(cfg PROXMOX_STORAGE)
    if [[ -z $POOLS_FILE ]]; then
        if [[ $injection == snippet ]]; then printf '%s\n' "$storage"; fi
        return 0
    fi
    if ! command -v perl >/dev/null 2>&1; then
        warn "perl not found: assuming the pools in $POOLS_FILE use snippet injection"
        printf '%s\n' "$storage"
        return 0
    fi
    # shellcheck disable=SC2016 # Perl code, not shell expansions
    perl -MJSON::PP -e '
        my ($file, $injection, $storage) = @ARGV;
        my $data = eval {
            open(my $fh, "<", $file) or die;
            local $/;
            JSON::PP->new->relaxed->decode(<$fh>);
        };
        my $pools = ref($data) eq "HASH" ? $data->{pools} : undef;
        if (ref($pools) ne "ARRAY") { print "$storage\n"; exit 0; }
        my %seen;
        for my $pool (@$pools) {
            next if ref($pool) ne "HASH";
            next if lc($pool->{injection} // $injection) eq "agent";
            my $s = $pool->{storage} // $storage;
            print "$s\n" if !$seen{$s}++;
        }
    ' "$POOLS_FILE" "$injection" "$storage"
}

# Paths equal or one inside the other.
paths_overlap() {
    [[ $1 == "$2" || $1 == "$2"/* || $2 == "$1"/* ]]
}

# A system directory, or inside one (the list of dispatcher-bin/src/privileges.rs).
is_system_dir() {
    local tree
    for tree in /etc /usr /bin /sbin /lib /lib64 /boot /root /proc /sys /dev /run /var/lib/pve-cluster \
        /var/lib/pve-manager; do
        [[ $1 == "$tree" || $1 == "$tree"/* ]] && return 0
    done
    contains "$1" / /var /var/lib /home /mnt /mnt/pve /tmp
}

# Files in the snippets directory $1 that the container's dispatcher user does not own: everything the
# dispatcher writes there is owned by it; anything else (hookscripts, other VMs' cloud-init files) must not
# be handed to the container.
refuse_foreign_files() {
    local dir=$1 owner first
    [[ -d $dir ]] || return 0
    owner=$(($(cfg CT_IDMAP_BASE) + $(cfg DISPATCHER_UID)))
    first=$(find "$dir" -mindepth 1 ! -uid "$owner" -print -quit 2>/dev/null || true)
    if [[ -n $first ]]; then
        die "PROXMOX_STORAGE=$(cfg PROXMOX_STORAGE): $dir holds files the dispatcher did not write (e.g. $(basename "$first"), not owned by host uid $owner); the container would own them: use an empty, dedicated snippets storage"
    fi
}

# Decides whether the container gets a snippets directory (SNIPPETS_NEEDED), checks PROXMOX_STORAGE before
# anything changes, creates it when it does not exist, and sets HOST_SNIPPETS (the host directory).
prepare_snippet_storage() {
    local storage needed line table _id type path content disable c others=() has_snippets=0 other
    local -a kinds
    SNIPPETS_NEEDED=0
    HOST_SNIPPETS=""
    needed=$(snippet_storages)
    if [[ -z $needed ]]; then
        log "every pool uses agent injection: no snippet storage and no bind mount"
        return 0
    fi
    SNIPPETS_NEEDED=1
    storage=$(cfg PROXMOX_STORAGE)
    while IFS= read -r other; do
        [[ $other == "$storage" ]] ||
            die "a pool keeps its snippets on storage $other, but the container gets only PROXMOX_STORAGE=$storage: remove the pool's \"storage\" (or set it to $storage)"
    done <<<"$needed"
    [[ $storage =~ ^[A-Za-z][A-Za-z0-9._-]*$ ]] || die "PROXMOX_STORAGE=$storage: not a storage id"
    table=$(storage_table)
    line=$(printf '%s\n' "$table" | awk -F '\t' -v s="$storage" '$1 == s { print; exit }')
    if [[ -z $line ]]; then
        SNIPPET_STORAGE_NEW=1
        type=dir
        path=$SNIPPET_STORAGE_BASE/$storage
        content=snippets
        disable=0
    else
        SNIPPET_STORAGE_NEW=0
        IFS=$'\t' read -r _id type path content disable <<<"$line"
    fi
    ((disable == 0)) || die "PROXMOX_STORAGE=$storage: the storage is disabled"
    case $type in
    dir | nfs | cifs | cephfs) ;;
    *) die "PROXMOX_STORAGE=$storage: a $type storage cannot hold snippets; leave PROXMOX_STORAGE unset to create the dedicated directory storage $DEFAULT_SNIPPET_STORAGE" ;;
    esac
    IFS=',' read -ra kinds <<<"$content"
    for c in "${kinds[@]}"; do
        c=${c//[[:space:]]/}
        if [[ $c == snippets ]]; then
            has_snippets=1
        elif [[ -n $c ]]; then
            others+=("$c")
        fi
    done
    if ((${#others[@]})); then
        local joined
        joined=$(IFS=,; printf '%s' "${others[*]}")
        die "PROXMOX_STORAGE=$storage also holds $joined content: its snippets directory (hookscripts run as root on the host, other VMs' cloud-init files) must not be handed to the container; leave PROXMOX_STORAGE unset to create the dedicated storage $DEFAULT_SNIPPET_STORAGE (snippets only)"
    fi
    ((has_snippets)) || die "PROXMOX_STORAGE=$storage lacks the snippets content type (pvesm set $storage --content snippets)"
    while [[ $path == */ && $path != / ]]; do path=${path%/}; done
    if [[ -n $path ]]; then
        [[ $path =~ ^/[A-Za-z0-9._/-]+$ && ! $path =~ (^|/)\.\.?(/|$) ]] ||
            die "PROXMOX_STORAGE=$storage: path $path is not a plain absolute path"
        if is_system_dir "$path"; then
            die "PROXMOX_STORAGE=$storage: its directory $path is a system directory; use e.g. $SNIPPET_STORAGE_BASE/$storage"
        fi
        if paths_overlap "$path" /var/lib/vz; then
            die "PROXMOX_STORAGE=$storage: its directory $path overlaps /var/lib/vz, the local storage's, where hookscripts and other VMs' cloud-init files live"
        fi
        while IFS=$'\t' read -r _id _ other _ _; do
            [[ -n $_id && $_id != "$storage" && -n $other ]] || continue
            if paths_overlap "$path" "$other"; then
                die "PROXMOX_STORAGE=$storage: its directory $path overlaps that of storage $_id ($other); a snippets storage needs a directory of its own"
            fi
        done <<<"$table"
    fi
    if ((SNIPPET_STORAGE_NEW)); then
        refuse_foreign_files "$path/snippets"
        log "creating the dedicated snippets storage $storage at $path (content: snippets only)"
        run pvesm add dir "$storage" --path "$path" --content snippets
        if ((DRY_RUN)); then
            HOST_SNIPPETS=$path/snippets
            return 0
        fi
    fi
    local probe
    probe=$(pvesm path "$storage:snippets/ghr-probe.yaml" 2>/dev/null || true)
    [[ -n $probe ]] || die "cannot find the snippets directory of storage $storage (pvesm path)"
    HOST_SNIPPETS=$(dirname "$probe")
    [[ $HOST_SNIPPETS =~ ^/[A-Za-z0-9._/-]+$ ]] ||
        die "host snippets directory $HOST_SNIPPETS: expected an absolute path without spaces or commas"
    if [[ -n $(cfg HOST_SNIPPETS_DIR) && $(cfg HOST_SNIPPETS_DIR) != "$HOST_SNIPPETS" ]]; then
        die "HOST_SNIPPETS_DIR=$(cfg HOST_SNIPPETS_DIR) is not the snippets directory of PROXMOX_STORAGE=$storage ($HOST_SNIPPETS)"
    fi
    refuse_foreign_files "$HOST_SNIPPETS"
}

# The mpN of the container that targets SNIPPETS_DIR ("" when none).
snippets_mount_slot() {
    pct config "$CTID" 2>/dev/null | awk -v t="$(cfg SNIPPETS_DIR)" '
        $1 ~ /^mp[0-9]+:$/ && ("," $2 ",") ~ (",mp=" t ",") { sub(/^mp/, "", $1); sub(/:$/, "", $1); print $1; exit }'
}

# Agent injection only: the container keeps no snippets bind mount.
remove_bind_mount() {
    local slot
    slot=$(snippets_mount_slot)
    [[ -n $slot ]] || return 0
    log "agent injection only: removing the snippets bind mount mp$slot"
    run pct set "$CTID" --delete "mp$slot"
    MOUNT_CHANGED=1
}

# Bind-mounts the host snippets dir at SNIPPETS_DIR, reusing the mpN that already targets it.
ensure_bind_mount() {
    local host_dir=$1 target want conf slot current free n
    target=$(cfg SNIPPETS_DIR)
    want="$host_dir,mp=$target"
    conf=$(pct config "$CTID" 2>/dev/null || true)
    slot=$(snippets_mount_slot)
    if [[ -n $slot ]]; then
        current=$(printf '%s\n' "$conf" | awk -v k="mp$slot:" '$1 == k { print $2; exit }')
        if [[ $current == "$want" ]]; then
            log "mp$slot already bind-mounts $host_dir at $target"
            MOUNT_CHANGED=0
            return
        fi
    else
        for n in $(seq 0 255); do
            if ! printf '%s\n' "$conf" | grep -q "^mp$n:"; then
                free=$n
                break
            fi
        done
        [[ -n ${free:-} ]] || die "no free mount point slot in container $CTID"
        slot=$free
    fi
    log "bind-mounting $host_dir at $target (mp$slot)"
    run pct set "$CTID" "--mp$slot" "$want"
    MOUNT_CHANGED=1
}

wait_for_container() {
    local i
    for i in $(seq 1 30); do
        if ct_exec true >/dev/null 2>&1; then
            ct_exec systemctl is-system-running --wait >/dev/null 2>&1 || true
            return
        fi
        log "waiting for container $CTID to accept commands ($i/30)"
        sleep 2
    done
    die "container $CTID does not accept pct exec"
}

start_container() {
    if ct_running; then
        if ((MOUNT_CHANGED)); then
            log "rebooting container $CTID to apply the mount point"
            run pct reboot "$CTID"
        fi
    else
        log "starting container $CTID"
        run pct start "$CTID"
    fi
    ((DRY_RUN)) || wait_for_container
}

set_root_password() {
    [[ -n $(cfg CT_ROOT_PASSWORD) ]] || return 0
    log "setting the container's root password (via stdin)"
    ((DRY_RUN)) && return 0
    printf 'root:%s\n' "$(cfg CT_ROOT_PASSWORD)" | pct exec "$CTID" -- chpasswd
}

ensure_service_user() {
    local uid
    uid=$(cfg DISPATCHER_UID)
    if ((DRY_RUN)) && ! ct_exists; then
        SVC_UID=$uid
        SVC_GID=$uid
        return
    fi
    if ! ct_exec id -u dispatcher >/dev/null 2>&1; then
        log "creating the service user dispatcher (uid $uid) in the container"
        run ct_exec groupadd --system --gid "$uid" dispatcher
        run ct_exec useradd --system --uid "$uid" --gid "$uid" --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "GitHub Actions runner dispatcher" dispatcher
    fi
    if ((DRY_RUN)); then
        SVC_UID=$uid
        SVC_GID=$uid
        return
    fi
    SVC_UID=$(ct_exec id -u dispatcher)
    SVC_GID=$(ct_exec id -g dispatcher)
    [[ $SVC_UID =~ ^[0-9]+$ && $SVC_GID =~ ^[0-9]+$ ]] || die "cannot read the uid/gid of dispatcher in container $CTID"
}

# The container's uid U is host uid CT_IDMAP_BASE+U (Proxmox's default map for unprivileged containers).
grant_snippets_access() {
    local host_dir=$1 base
    base=$(cfg CT_IDMAP_BASE)
    if pct config "$CTID" 2>/dev/null | grep -q '^lxc.idmap'; then
        warn "container $CTID has a custom lxc.idmap: make sure CT_IDMAP_BASE ($base) maps uid $SVC_UID"
    fi
    run mkdir -p "$host_dir"
    log "host $host_dir owned by $((base + SVC_UID)):$((base + SVC_GID)) (= dispatcher:dispatcher in the container)"
    run chown "$((base + SVC_UID)):$((base + SVC_GID))" "$host_dir"
    run chmod u+rwx "$host_dir"
}

# Quotes a value for a systemd EnvironmentFile (and POSIX sh): double quotes, with \ " $ ` escaped.
env_quote() {
    local v=$1
    v=${v//\\/\\\\}
    v=${v//\"/\\\"}
    v=${v//\$/\\\$}
    v=${v//\`/\\\`}
    printf '"%s"' "$v"
}

# Copies host files the dispatcher needs (CA, App key, pools, templates) and points the variables at them.
push_file() {
    local src=$1 dst=$2 perms=$3 user=${4:-0} group=${5:-0}
    run pct push "$CTID" "$src" "$dst" --perms "$perms" --user "$user" --group "$group"
}

install_support_files() {
    run ct_exec mkdir -p "$CT_BASE" "$CT_TEMPLATES" "$CT_ETC" "$CT_DROPIN_DIR"
    run ct_exec chmod 0755 "$CT_BASE" "$CT_TEMPLATES" "$CT_ETC"

    local ca
    ca=$(cfg PROXMOX_CA_CERT)
    if [[ -z $ca && -z $(cfg PROXMOX_TLS_FINGERPRINT) && -f $PVE_ROOT_CA ]] &&
        [[ ! $(cfg PROXMOX_VERIFY_SSL) =~ ^(0|false|no|off)$ ]]; then
        ca=$PVE_ROOT_CA
        log "PROXMOX_CA_CERT not set: installing this cluster's CA $PVE_ROOT_CA"
    fi
    if [[ -n $ca ]]; then
        if [[ -f $ca ]]; then
            push_file "$ca" "$CT_ETC/proxmox-ca.pem" 0644
            CFG[PROXMOX_CA_CERT]=$CT_ETC/proxmox-ca.pem
        else
            warn "PROXMOX_CA_CERT=$ca is not a file on this host; kept as a path inside the container"
        fi
    fi

    local key
    key=$(cfg GITHUB_APP_PRIVATE_KEY_FILE)
    if [[ -n $key ]]; then
        if [[ -f $key ]]; then
            push_file "$key" "$CT_ETC/github-app-key.pem" 0600 "$SVC_UID" "$SVC_GID"
            CFG[GITHUB_APP_PRIVATE_KEY_FILE]=$CT_ETC/github-app-key.pem
        else
            warn "GITHUB_APP_PRIVATE_KEY_FILE=$key is not a file on this host; kept as a path inside the container"
        fi
    fi

    if [[ -n $POOLS_FILE ]]; then
        log "installing pools file $POOLS_FILE as $CT_POOLS"
        push_file "$POOLS_FILE" "$CT_POOLS" 0644
        if [[ -n $(cfg RUNNER_POOLS_CONFIG) && $(cfg RUNNER_POOLS_CONFIG) != "$CT_POOLS" ]]; then
            warn "RUNNER_POOLS_CONFIG=$(cfg RUNNER_POOLS_CONFIG) replaced by $CT_POOLS (the installed pools file)"
        fi
        CFG[RUNNER_POOLS_CONFIG]=$CT_POOLS
    fi

    if [[ -n $TEMPLATES_DIR ]]; then
        log "installing user-data templates from $TEMPLATES_DIR into $CT_TEMPLATES"
        local f rel
        while IFS= read -r -d '' f <&3; do
            rel=${f#"$TEMPLATES_DIR"/}
            if [[ $rel == */* ]]; then
                run ct_exec mkdir -p "$CT_TEMPLATES/$(dirname "$rel")"
            fi
            push_file "$f" "$CT_TEMPLATES/$rel" 0644
        done 3< <(find "$TEMPLATES_DIR" -type f -print0 | sort -z)
    fi
}

install_binary() {
    log "installing $BINARY as $CT_BIN"
    # Push beside the running binary and rename: overwriting a running executable fails (ETXTBSY).
    push_file "$BINARY" "$CT_BIN.new" 0755
    run ct_exec mv -f "$CT_BIN.new" "$CT_BIN"
    push_file "$CTL_FILE" /usr/local/bin/dispatcherctl 0755
}

ensure_ca_certificates() {
    ((DRY_RUN)) && return 0
    # shellcheck disable=SC2016 # ${Status} is a dpkg-query format field, not a shell expansion
    if ! ct_exec dpkg-query -W -f '${Status}\n' ca-certificates 2>/dev/null | grep -q 'install ok installed'; then
        log "installing ca-certificates in the container"
        ct_exec apt-get update -qq || warn "apt-get update failed in the container"
        ct_exec env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates ||
            warn "could not install ca-certificates; GitHub TLS verification needs them"
    fi
}

# Writes every set dispatcher variable to a 0600 temp file and pushes it as /etc/default/dispatcher (0600).
install_env_file() {
    local tmp=$TMP_DIR/dispatcher.env key written=()
    {
        printf '# /etc/default/dispatcher — written by bootstrap-dispatcher-lxc.sh; edit dispatcher.env on the host\n'
        printf '# and re-run the script, or edit here and run: systemctl restart dispatcher. Mode 0600: holds secrets.\n'
        for key in "${DISPATCHER_VARS[@]}"; do
            [[ -n ${CFG[$key]:-} ]] || continue
            printf '%s=%s\n' "$key" "$(env_quote "${CFG[$key]}")"
            written+=("$key")
        done
    } >"$tmp"
    chmod 0600 "$tmp"
    log "writing $CT_ENV_FILE (0600): ${written[*]}"
    push_file "$tmp" "$CT_ENV_FILE" 0600
}

install_unit() {
    push_file "$UNIT_FILE" "$CT_UNIT" 0644
    local dropin=$CT_DROPIN_DIR/snippets-dir.conf
    if [[ $(cfg SNIPPETS_DIR) != "$DEFAULT_SNIPPETS_DIR" ]]; then
        local tmp=$TMP_DIR/snippets-dir.conf
        printf '[Service]\nReadWritePaths=-%s\n' "$(cfg SNIPPETS_DIR)" >"$tmp"
        push_file "$tmp" "$dropin" 0644
    else
        run ct_exec rm -f "$dropin"
    fi
    run ct_exec systemctl daemon-reload
    run ct_exec systemctl enable dispatcher.service
    log "restarting dispatcher.service"
    run ct_exec systemctl restart dispatcher.service
}

report() {
    local ctid=$CTID
    ((DRY_RUN)) && {
        log "dry run finished; nothing was changed"
        return
    }
    sleep "${BOOTSTRAP_STATUS_DELAY:-2}"
    ct_exec systemctl --no-pager --lines=15 status dispatcher.service || true
    cat <<EOF

The dispatcher runs in container $ctid ($(cfg CT_HOSTNAME)).
  Follow its logs:      pct exec $ctid -- journalctl -u dispatcher -f
  Check the setup:      pct exec $ctid -- dispatcherctl check
  What it would do:     pct exec $ctid -- dispatcherctl plan
  Pools and runners:    pct exec $ctid -- dispatcherctl status
  Change settings:      edit ${ENV_FILE:-dispatcher.env} and run this script again
EOF
}

main() {
    parse_args "$@"
    if ((!DRY_RUN)) && [[ $(id -u) != 0 ]]; then
        die "run this on the Proxmox VE host as root (pct needs it)"
    fi
    for tool in pct pveam pvesm pvesh; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run this on a Proxmox VE host"
    done
    load_config
    resolve_inputs
    SNIPPET_STORAGE_NEW=0
    prepare_snippet_storage
    build_or_find_binary
    TMP_DIR=$(mktemp -d)
    resolve_ctid
    CREATED=0
    MOUNT_CHANGED=0
    ensure_container
    local host_dir=$HOST_SNIPPETS
    if ((!SNIPPETS_NEEDED)); then
        ((DRY_RUN && CREATED)) || remove_bind_mount
    elif ((DRY_RUN)) && ((CREATED)); then
        log "[dry-run] would bind-mount $host_dir at $(cfg SNIPPETS_DIR)"
    else
        ensure_bind_mount "$host_dir"
    fi
    start_container
    if ((DRY_RUN)) && ((CREATED)); then
        SVC_UID=$(cfg DISPATCHER_UID)
        SVC_GID=$SVC_UID
        log "[dry-run] would create the service user, install the files and start the service"
        if ((SNIPPETS_NEEDED)); then grant_snippets_access "$host_dir"; fi
        report
        return
    fi
    set_root_password
    ensure_service_user
    if ((SNIPPETS_NEEDED)); then grant_snippets_access "$host_dir"; fi
    ensure_ca_certificates
    install_support_files
    install_binary
    install_env_file
    install_unit
    report
}

main "$@"
