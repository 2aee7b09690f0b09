//! Deployment files of `dispatcher-bin/deploy/`: shellcheck, the LXC bootstrap script run against fake Proxmox
//! VE tools (`pct`, `pveam`, `pvesm`, `pvesh`, plus `id`, `chown`, `cargo`) placed first on `PATH`, and
//! `systemd-analyze verify` on the unit.
//!
//! The fakes are small bash scripts written into a temp dir. Each one appends its argv (fields separated by
//! U+001F) to `calls.log` and keeps state in files: containers live in `state/ct/<id>/` with a `conf`, a
//! `status` and a `root/` tree that `pct push` copies into and that `pct exec mkdir/mv/rm/chmod` act on, so
//! the test can read `/etc/default/dispatcher` as the container would see it. The storages are
//! `state/storage.cfg` (the script reads it through `PVE_STORAGE_CFG`; `pvesm add` appends to it) and the
//! snippets directory of storage `<id>` is `state/host/<id>/snippets` (what `pvesm path` answers).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every variable the dispatcher reads (its own list, so a variable added there must reach the bootstrap
/// script too) plus `RUST_LOG`: the bootstrap script must carry each one that is set.
fn dispatcher_vars() -> Vec<&'static str> {
    let mut v = dispatcher_bin::env::KNOWN_VARIABLES.to_vec();
    v.push("RUST_LOG");
    v
}

/// Distinctive secret values: shell metacharacters on purpose, and a marker each that must never show up on a
/// command line or in the script's output.
const PROXMOX_SECRET: &str = r#"pve"MARK-PVE-7f3a'$(touch /tmp/ghr-pwned)`id`\z #1"#;
const GITHUB_SECRET: &str = "github_pat_MARK-GH-11AAAAAAA0123456789";
const WEBHOOK_SECRET: &str = r"whsec MARK-WH-99 $HOME \n";
const ROOT_PASSWORD: &str = "MARK-ROOT-s3cr3t!";
const SECRET_MARKERS: &[&str] = &["MARK-PVE-7f3a", "MARK-GH-11", "MARK-WH-99", "MARK-ROOT"];

const CTID: &str = "150";

/// A fresh Proxmox VE host's storages: `local` without snippets, and `local-lvm`.
const DEFAULT_STORAGE_CFG: &str = "dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images
";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dispatcher-bin")
        .join("deploy")
}

fn script() -> PathBuf {
    deploy_dir().join("bootstrap-dispatcher-lxc.sh")
}

/// Common head of every fake: log argv, one line per call.
const FAKE_HEAD: &str = r#"#!/usr/bin/env bash
set -euo pipefail
S="$FAKE_STATE"
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\037%s' "$a"; done; printf '\n'; } >>"$S/calls.log"
"#;

const FAKE_PCT: &str = r#"
cmd=${1:-}
id=${2:-}
ct="$S/ct/$id"
need_ct() { [ -d "$ct" ] || { echo "Configuration file 'nodes/pve/lxc/$id.conf' does not exist" >&2; exit 2; }; }
case "$cmd" in
list)
    printf 'VMID       Status     Lock         Name\n'
    for d in "$S"/ct/*/; do
        [ -d "$d" ] || continue
        printf '%-10s %-10s %-12s %s\n' "$(basename "$d")" "$(cat "$d/status")" "" "$(cat "$d/hostname")"
    done ;;
config) need_ct; cat "$ct/conf" ;;
status) need_ct; echo "status: $(cat "$ct/status")" ;;
create)
    [ ! -d "$ct" ] || { echo "CT $id already exists" >&2; exit 255; }
    tmpl=$3
    case "$tmpl" in
    /*) [ -f "$tmpl" ] || { echo "template $tmpl not found" >&2; exit 255; } ;;
    *:vztmpl/*) [ -f "$S/templates/${tmpl#*:vztmpl/}" ] || { echo "volume $tmpl does not exist" >&2; exit 255; } ;;
    *) echo "bad template $tmpl" >&2; exit 255 ;;
    esac
    shift 3
    host=""
    while [ $# -gt 0 ]; do
        case "$1" in --hostname) host=$2 ;; esac
        shift 2
    done
    mkdir -p "$ct/root/usr/local/bin" "$ct/root/etc/default" "$ct/root/etc/systemd/system" "$ct/root/opt"
    echo "$host" >"$ct/hostname"
    echo stopped >"$ct/status"
    printf 'arch: amd64\nfeatures: nesting=1\nhostname: %s\nostype: debian\nunprivileged: 1\n' "$host" >"$ct/conf" ;;
set)
    need_ct; shift 2
    while [ $# -gt 0 ]; do
        key=${1#-}; key=${key#-}
        if [ "$key" = delete ]; then
            grep -v "^$2:" "$ct/conf" >"$ct/conf.new" || true
        else
            grep -v "^$key:" "$ct/conf" >"$ct/conf.new" || true
            echo "$key: $2" >>"$ct/conf.new"
        fi
        mv "$ct/conf.new" "$ct/conf"
        shift 2
    done ;;
start)
    need_ct
    [ "$(cat "$ct/status")" != running ] || { echo "CT $id already running" >&2; exit 255; }
    echo running >"$ct/status" ;;
stop|shutdown) need_ct; echo stopped >"$ct/status" ;;
reboot) need_ct ;;
destroy)
    need_ct
    [ "$(cat "$ct/status")" != running ] || { echo "CT $id is running - destroy failed" >&2; exit 255; }
    rm -rf "$ct" ;;
push)
    need_ct
    src=$3; dst=$4; shift 4
    perms=""; user=""; group=""
    while [ $# -gt 0 ]; do
        case "$1" in --perms) perms=$2 ;; --user) user=$2 ;; --group) group=$2 ;; esac
        shift 2
    done
    [ -d "$ct/root$(dirname "$dst")" ] || { echo "failed to open $dst: No such file or directory" >&2; exit 255; }
    cp "$src" "$ct/root$dst"
    chmod "${perms:-0644}" "$ct/root$dst"
    printf '%s %s %s %s %s\n' "$dst" "${perms:--}" "${user:--}" "${group:--}" "$(stat -c %a "$src")" >>"$ct/push.log" ;;
exec)
    need_ct; shift 2
    [ "${1:-}" = "--" ] && shift
    [ "$(cat "$ct/status")" = running ] || { echo "CT $id not running" >&2; exit 255; }
    prog=$1; shift
    case "$prog" in
    true) ;;
    id)
        [ -f "$ct/user" ] || { echo "id: 'dispatcher': no such user" >&2; exit 1; }
        case "$1" in -u) cut -d: -f1 "$ct/user" ;; -g) cut -d: -f2 "$ct/user" ;; esac ;;
    groupadd) ;;
    useradd)
        uid=""; gid=""
        while [ $# -gt 1 ]; do
            case "$1" in --uid) uid=$2; shift ;; --gid) gid=$2; shift ;; esac
            shift
        done
        echo "$uid:$gid" >"$ct/user" ;;
    chpasswd) cat >>"$ct/chpasswd.stdin" ;;
    systemctl)
        echo "$*" >>"$ct/systemctl.log"
        case "$1" in is-system-running) echo running ;; status) echo "dispatcher.service - fake" ;; esac ;;
    dpkg-query) echo "install ok installed" ;;
    mkdir|mv|rm|chmod)
        args=()
        for a in "$@"; do case "$a" in /*) args+=("$ct/root$a") ;; *) args+=("$a") ;; esac; done
        "$prog" "${args[@]}" ;;
    *) echo "fake pct exec: unsupported command $prog" >&2; exit 127 ;;
    esac ;;
*) echo "fake pct: unsupported subcommand $cmd" >&2; exit 2 ;;
esac
"#;

const FAKE_PVEAM: &str = r#"
case "${1:-}" in
update) echo "update successful" ;;
available)
    printf 'mail            proxmox-mail-gateway-8.1-standard_8.1-1_amd64.tar.zst\n'
    printf 'system          debian-11-standard_11.7-1_amd64.tar.zst\n'
    printf 'system          debian-12-standard_12.7-1_amd64.tar.zst\n'
    printf 'system          debian-13-standard_13.1-2_amd64.tar.zst\n'
    printf 'system          ubuntu-24.04-standard_24.04-2_amd64.tar.zst\n' ;;
list)
    printf 'NAME                                                         SIZE\n'
    for f in "$S"/templates/*; do
        [ -f "$f" ] || continue
        printf '%s:vztmpl/%-50s 120.00MB\n' "$2" "$(basename "$f")"
    done ;;
download) touch "$S/templates/$3" ;;
*) echo "fake pveam: unsupported $*" >&2; exit 2 ;;
esac
"#;

const FAKE_PVESM: &str = r#"
case "${1:-}" in
path)
    vol=$2; storage=${vol%%:*}; rest=${vol#*:}
    grep -q "^[a-z]*: $storage\$" "$S/storage.cfg" || { echo "storage '$storage' does not exist" >&2; exit 255; }
    case "$rest" in
    snippets/*) echo "$S/host/$storage/snippets/${rest#snippets/}" ;;
    *) echo "fake pvesm: unsupported volume $vol" >&2; exit 2 ;;
    esac ;;
add)
    type=$2; id=$3; shift 3
    ! grep -q "^[a-z]*: $id\$" "$S/storage.cfg" || { echo "storage ID '$id' already defined" >&2; exit 255; }
    { printf '\n%s: %s\n' "$type" "$id"
      while [ $# -gt 0 ]; do printf '\t%s %s\n' "${1#--}" "$2"; shift 2; done; } >>"$S/storage.cfg"
    mkdir -p "$S/host/$id/snippets" ;;
status)
    printf 'Name             Type     Status           Total            Used       Available        %%\n'
    case "$*" in
    *rootdir*) printf 'local            dir      active        98497780        10000000        83447780   10.15%%\n'
               printf 'local-lvm        lvmthin  active       365760512        20000000       345760512    5.47%%\n' ;;
    *snippets*) printf 'local            dir      active        98497780        10000000        83447780   10.15%%\n' ;;
    esac ;;
*) echo "fake pvesm: unsupported $*" >&2; exit 2 ;;
esac
"#;

const FAKE_PVESH: &str = r#"
case "$*" in
"get /cluster/nextid") echo 150 ;;
*) echo "fake pvesh: unsupported $*" >&2; exit 2 ;;
esac
"#;

/// `id -u` says root (pct needs it); `chown` only records, so the test also runs as a normal user.
const FAKE_ID: &str = r#"
case "$*" in -u) echo 0 ;; *) exec /usr/bin/id "$@" ;; esac
"#;
const FAKE_CHOWN: &str = "\n";

/// `cargo build …` leaves a binary where the script expects it.
const FAKE_CARGO: &str = r#"
mkdir -p "$CARGO_TARGET_DIR/release"
printf '#!/bin/sh\necho built-by-fake-cargo\n' >"$CARGO_TARGET_DIR/release/dispatcher"
chmod 0755 "$CARGO_TARGET_DIR/release/dispatcher"
"#;

/// One simulated Proxmox host: fakes on PATH, state, and the operator's files.
struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rig = Self { dir };
        for sub in ["bin", "state/ct", "state/templates", "state/host", "op"] {
            fs::create_dir_all(rig.path(sub)).expect("mkdir");
        }
        fs::write(rig.path("state/calls.log"), "").expect("log");
        rig.write_storage_cfg(DEFAULT_STORAGE_CFG);
        for (name, body) in [
            ("pct", FAKE_PCT),
            ("pveam", FAKE_PVEAM),
            ("pvesm", FAKE_PVESM),
            ("pvesh", FAKE_PVESH),
            ("id", FAKE_ID),
            ("chown", FAKE_CHOWN),
            ("cargo", FAKE_CARGO),
        ] {
            let p = rig.path("bin").join(name);
            fs::write(&p, format!("{FAKE_HEAD}{body}")).expect("write fake");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod fake");
        }
        let binary = rig.path("op/dispatcher");
        fs::write(&binary, "#!/bin/sh\necho fake dispatcher\n").expect("binary");
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(rig.path("op/ca.pem"), "-----BEGIN CERTIFICATE-----\nfake\n").expect("ca");
        fs::write(
            rig.path("op/app-key.pem"),
            "-----BEGIN PRIVATE KEY-----\nfake\n",
        )
        .expect("key");
        rig
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Replaces the cluster's storage definitions.
    fn write_storage_cfg(&self, text: &str) {
        fs::write(self.path("state/storage.cfg"), text).expect("storage.cfg");
    }

    fn storage_cfg(&self) -> String {
        fs::read_to_string(self.path("state/storage.cfg")).expect("storage.cfg")
    }

    fn ct(&self, rel: &str) -> PathBuf {
        self.path(&format!("state/ct/{CTID}/{rel}"))
    }

    fn ct_file(&self, abs: &str) -> PathBuf {
        self.ct(&format!("root{abs}"))
    }

    /// The full input: every dispatcher variable and the bootstrap-only secret.
    fn full_input(&self) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> = dispatcher_vars()
            .iter()
            .map(|&k| (k, format!("value-of-{}", k.to_ascii_lowercase())))
            .collect();
        let set = |v: &mut Vec<(&'static str, String)>, k: &str, val: String| {
            if let Some(e) = v.iter_mut().find(|(key, _)| *key == k) {
                e.1 = val;
            }
        };
        set(
            &mut v,
            "PROXMOX_URL",
            "https://192.0.2.10:8006/api2/json".into(),
        );
        set(&mut v, "PROXMOX_TOKEN_ID", "ghr@pve!dispatcher".into());
        set(&mut v, "PROXMOX_TOKEN_SECRET", PROXMOX_SECRET.into());
        set(&mut v, "PROXMOX_STORAGE", "ghr-snippets".into());
        set(
            &mut v,
            "PROXMOX_CA_CERT",
            self.path("op/ca.pem").display().to_string(),
        );
        set(&mut v, "GITHUB_TOKEN", GITHUB_SECRET.into());
        set(
            &mut v,
            "GITHUB_APP_PRIVATE_KEY_FILE",
            self.path("op/app-key.pem").display().to_string(),
        );
        set(&mut v, "WEBHOOK_SECRET", WEBHOOK_SECRET.into());
        set(&mut v, "SNIPPETS_DIR", "/srv/ghr/snippets".into());
        set(&mut v, "RUNNER_LABELS", "self-hosted, linux ,x64".into());
        set(
            &mut v,
            "REPO_URL",
            "https://github.com/NREL/EnergyPlus".into(),
        );
        v.push(("CT_ROOT_PASSWORD", ROOT_PASSWORD.into()));
        v
    }

    /// Writes `op/dispatcher.env` the way an operator would: comments, `export`, quotes, secrets unquoted.
    fn write_env_file(&self, vars: &[(&str, String)]) -> PathBuf {
        let mut text = String::from("# operator env file\n\n");
        for (i, (k, v)) in vars.iter().enumerate() {
            match i % 3 {
                // A value with both quote kinds can only be written unquoted.
                _ if v.contains('"') && v.contains('\'') => text.push_str(&format!("{k}={v}\n")),
                0 if !v.contains('"') => text.push_str(&format!("export {k}=\"{v}\"\n")),
                1 if !v.contains('\'') => text.push_str(&format!("{k}='{v}'\r\n")),
                _ => text.push_str(&format!("{k}={v}\n")),
            }
        }
        let p = self.path("op/dispatcher.env");
        fs::write(&p, text).expect("env file");
        p
    }

    fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            self.path("bin").display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path("op"))
            .env("FAKE_STATE", self.path("state"))
            .env("BOOTSTRAP_STATUS_DELAY", "0")
            .env("PVE_STORAGE_CFG", self.path("state/storage.cfg"))
            .env("TMPDIR", self.path("op"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("run bootstrap script")
    }

    /// Runs with the env file and `--binary`; asserts success.
    fn bootstrap(&self, extra_args: &[&str]) -> Output {
        let env_file = self.path("op/dispatcher.env");
        let binary = self.path("op/dispatcher");
        let mut args = vec![
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra_args);
        let out = self.run(&args, &[]);
        assert!(
            out.status.success(),
            "bootstrap failed: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Recorded calls, each as argv (program name first).
    fn calls(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.path("state/calls.log"))
            .expect("calls.log")
            .lines()
            .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
            .collect()
    }

    fn calls_matching(&self, prefix: &[&str]) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
            .collect()
    }

    fn clear_calls(&self) {
        fs::write(self.path("state/calls.log"), "").expect("clear log");
        let _ = fs::remove_file(self.ct("systemctl.log"));
        let _ = fs::remove_file(self.ct("push.log"));
    }

    fn systemctl_log(&self) -> Vec<String> {
        fs::read_to_string(self.ct("systemctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `pct push` destinations → (perms, user, group, host source mode).
    fn pushes(&self) -> BTreeMap<String, (String, String, String, String)> {
        fs::read_to_string(self.ct("push.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 5).then(|| {
                    (
                        f[0].to_owned(),
                        (
                            f[1].to_owned(),
                            f[2].to_owned(),
                            f[3].to_owned(),
                            f[4].to_owned(),
                        ),
                    )
                })
            })
            .collect()
    }
}

/// Parses the written env file the way `sh` does (`set -a; . file`), so quoting is checked by a real parser.
fn parse_env_with_sh(file: &Path) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"set -a; . "$1"; for k in $2; do eval "v=\${$k-__UNSET__}"; printf '%s=%s\0' "$k" "$v"; done"#)
        .arg("sh")
        .arg(file)
        .arg(dispatcher_vars().join(" "))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "sh could not source {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .split('\0')
        .filter(|s| !s.is_empty())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .filter(|(_, v)| v != "__UNSET__")
        .collect()
}

fn assert_no_secret_anywhere(rig: &Rig, outputs: &[&Output]) {
    let log = fs::read_to_string(rig.path("state/calls.log")).expect("log");
    for marker in SECRET_MARKERS {
        assert!(
            !log.contains(marker),
            "secret marker {marker} on a recorded command line:\n{log}"
        );
        for out in outputs {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !text.contains(marker),
                "secret marker {marker} in the script's output:\n{text}"
            );
        }
    }
    for secret in [PROXMOX_SECRET, GITHUB_SECRET, WEBHOOK_SECRET, ROOT_PASSWORD] {
        assert!(
            !log.contains(secret),
            "a secret value is on a recorded command line"
        );
    }
    assert!(
        !Path::new("/tmp/ghr-pwned").exists(),
        "a secret value was executed by a shell"
    );
}

#[test]
fn shellcheck_deploy_scripts() {
    let have = Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "shellcheck is missing but CI is set: install it"
        );
        eprintln!("shellcheck not installed: skipped (set CI to make this fatal)");
        return;
    }
    let out = Command::new("shellcheck")
        .arg("--shell=bash")
        .arg("--severity=style")
        .arg(script())
        .arg(deploy_dir().join("dispatcherctl"))
        .output()
        .expect("shellcheck");
    assert!(
        out.status.success(),
        "shellcheck findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn first_run_creates_and_configures_the_container() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    let out = rig.bootstrap(&[]);

    // Template: index updated, newest Debian standard (13) downloaded, container created from it.
    assert_eq!(rig.calls_matching(&["pveam", "update"]).len(), 1);
    assert_eq!(
        rig.calls_matching(&["pveam", "download"]),
        vec![vec![
            "pveam",
            "download",
            "local",
            "debian-13-standard_13.1-2_amd64.tar.zst"
        ]]
    );
    let creates = rig.calls_matching(&["pct", "create"]);
    assert_eq!(creates.len(), 1, "{creates:?}");
    let create = creates[0].join(" ");
    for part in [
        "pct create 150 local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst",
        "--hostname gha-dispatcher",
        "--unprivileged 1",
        "--features nesting=1",
        "--rootfs local-lvm:4",
    ] {
        assert!(create.contains(part), "`{part}` missing in: {create}");
    }
    assert!(rig.calls_matching(&["pct", "destroy"]).is_empty());

    // The dedicated snippets storage is created, and its snippets dir bind-mounted at SNIPPETS_DIR before the
    // first start.
    assert_eq!(
        rig.calls_matching(&["pvesm", "add"]),
        vec![vec![
            "pvesm",
            "add",
            "dir",
            "ghr-snippets",
            "--path",
            "/var/lib/ghr-snippets",
            "--content",
            "snippets"
        ]]
    );
    let host_snippets = rig.path("state/host/ghr-snippets/snippets");
    let set = rig.calls_matching(&["pct", "set", CTID]);
    assert_eq!(
        set,
        vec![vec![
            "pct".to_owned(),
            "set".into(),
            CTID.into(),
            "--mp0".into(),
            format!("{},mp=/srv/ghr/snippets", host_snippets.display())
        ]]
    );
    let calls = rig.calls();
    let pos = |p: &[&str]| {
        calls
            .iter()
            .position(|c| c.iter().zip(p).all(|(a, b)| a == b) && c.len() >= p.len())
            .unwrap_or_else(|| panic!("{p:?} not called"))
    };
    assert!(pos(&["pct", "set"]) < pos(&["pct", "start"]));
    // Host dir owned by the container's dispatcher user (uid/gid 990) through the unprivileged map.
    assert_eq!(
        rig.calls_matching(&["chown"]),
        vec![vec![
            "chown".to_owned(),
            "100990:100990".into(),
            host_snippets.display().to_string()
        ]]
    );
    assert!(host_snippets.is_dir());
    assert_eq!(
        fs::read_to_string(rig.ct("user")).expect("user"),
        "990:990\n"
    );

    // Files in the container.
    let pushes = rig.pushes();
    let expect = |dst: &str, perms: &str, user: &str| {
        let p = pushes
            .get(dst)
            .unwrap_or_else(|| panic!("{dst} not pushed: {pushes:?}"));
        assert_eq!((p.0.as_str(), p.1.as_str()), (perms, user), "{dst}");
    };
    expect("/usr/local/bin/dispatcher.new", "0755", "0");
    expect("/usr/local/bin/dispatcherctl", "0755", "0");
    expect("/etc/default/dispatcher", "0600", "0");
    expect("/etc/systemd/system/dispatcher.service", "0644", "0");
    expect(
        "/etc/systemd/system/dispatcher.service.d/snippets-dir.conf",
        "0644",
        "0",
    );
    expect("/etc/dispatcher/proxmox-ca.pem", "0644", "0");
    expect("/etc/dispatcher/github-app-key.pem", "0600", "990");
    assert!(
        rig.ct_file("/usr/local/bin/dispatcher").is_file(),
        "binary renamed into place"
    );
    assert!(!rig.ct_file("/usr/local/bin/dispatcher.new").exists());
    assert_eq!(
        fs::read(rig.ct_file("/etc/systemd/system/dispatcher.service")).expect("unit"),
        fs::read(deploy_dir().join("dispatcher.service")).expect("unit source")
    );
    assert_eq!(
        fs::read_to_string(
            rig.ct_file("/etc/systemd/system/dispatcher.service.d/snippets-dir.conf")
        )
        .expect("drop-in"),
        "[Service]\nReadWritePaths=-/srv/ghr/snippets\n"
    );

    // Root password through stdin only.
    assert_eq!(
        fs::read_to_string(rig.ct("chpasswd.stdin")).expect("chpasswd stdin"),
        format!("root:{ROOT_PASSWORD}\n")
    );

    // Service enabled and (re)started after daemon-reload.
    let sc = rig.systemctl_log();
    let i = |s: &str| {
        sc.iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("systemctl {s} missing: {sc:?}"))
    };
    assert!(i("daemon-reload") < i("enable dispatcher.service"));
    assert!(i("enable dispatcher.service") < i("restart dispatcher.service"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pct exec 150 -- journalctl -u dispatcher -f"),
        "{stdout}"
    );
    assert_no_secret_anywhere(&rig, &[&out]);
}

#[test]
fn env_file_has_every_variable_mode_0600_and_no_secret_on_any_command_line() {
    let rig = Rig::new();
    let input = rig.full_input();
    rig.write_env_file(&input);
    let out = rig.bootstrap(&[]);

    let env_path = rig.ct_file("/etc/default/dispatcher");
    let mode = fs::metadata(&env_path)
        .expect("env file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mode of /etc/default/dispatcher");
    let pushed = rig.pushes();
    let (perms, user, group, src_mode) = &pushed["/etc/default/dispatcher"];
    assert_eq!(
        (perms.as_str(), user.as_str(), group.as_str()),
        ("0600", "0", "0")
    );
    assert_eq!(src_mode, "600", "the host temp file must be 0600 too");
    // The host temp file is gone.
    let env_push = rig
        .calls_matching(&["pct", "push", CTID])
        .into_iter()
        .find(|c| c.get(4).is_some_and(|d| d == "/etc/default/dispatcher"))
        .expect("env push");
    assert!(
        !Path::new(&env_push[3]).exists(),
        "temp file {} left behind",
        env_push[3]
    );

    let written = parse_env_with_sh(&env_path);
    let rewritten: BTreeMap<&str, &str> = [
        ("PROXMOX_CA_CERT", "/etc/dispatcher/proxmox-ca.pem"),
        (
            "GITHUB_APP_PRIVATE_KEY_FILE",
            "/etc/dispatcher/github-app-key.pem",
        ),
    ]
    .into_iter()
    .collect();
    for (key, value) in &input {
        if !dispatcher_vars().contains(key) {
            assert!(
                !written.contains_key(*key),
                "{key} is bootstrap-only and must not be written"
            );
            continue;
        }
        let want = rewritten.get(key).copied().unwrap_or(value.as_str());
        assert_eq!(written.get(*key).map(String::as_str), Some(want), "{key}");
    }
    assert_eq!(written.len(), dispatcher_vars().len(), "{written:?}");
    let raw = fs::read_to_string(&env_path).expect("env");
    assert!(
        raw.contains("MARK-PVE-7f3a"),
        "the secret itself is in the file"
    );
    assert_no_secret_anywhere(&rig, &[&out]);
}

#[test]
fn second_run_updates_without_recreating() {
    let rig = Rig::new();
    let mut input = rig.full_input();
    rig.write_env_file(&input);
    rig.bootstrap(&[]);
    rig.clear_calls();

    // The operator changes a setting and ships a pools file next to the env file.
    if let Some(e) = input.iter_mut().find(|(k, _)| *k == "POLL_INTERVAL") {
        e.1 = "30".into();
    }
    rig.write_env_file(&input);
    fs::copy(
        deploy_dir().join("runner-pools.example.json"),
        rig.path("op/runner-pools.json"),
    )
    .expect("pools");
    let out = rig.bootstrap(&[]);

    assert!(
        rig.calls_matching(&["pct", "create"]).is_empty(),
        "second run must not create"
    );
    assert!(
        rig.calls_matching(&["pct", "destroy"]).is_empty(),
        "second run must not destroy"
    );
    assert!(
        rig.calls_matching(&["pct", "set"]).is_empty(),
        "mount point unchanged: no pct set"
    );
    assert!(
        rig.calls_matching(&["pct", "start"]).is_empty(),
        "already running"
    );
    assert!(rig.calls_matching(&["pveam", "download"]).is_empty());
    assert!(
        rig.calls_matching(&["pvesm", "add"]).is_empty(),
        "the snippets storage exists"
    );
    let sc = rig.systemctl_log();
    assert!(
        sc.iter().any(|l| l == "restart dispatcher.service"),
        "{sc:?}"
    );
    assert!(sc.iter().any(|l| l == "daemon-reload"), "{sc:?}");
    let pushes = rig.pushes();
    assert!(
        pushes.contains_key("/usr/local/bin/dispatcher.new"),
        "binary updated"
    );
    assert!(pushes.contains_key("/opt/dispatcher/runner-pools.json"));
    let written = parse_env_with_sh(&rig.ct_file("/etc/default/dispatcher"));
    assert_eq!(written["POLL_INTERVAL"], "30");
    assert_eq!(
        written["RUNNER_POOLS_CONFIG"],
        "/opt/dispatcher/runner-pools.json"
    );
    assert_eq!(
        fs::read(rig.ct_file("/opt/dispatcher/runner-pools.json")).expect("pools"),
        fs::read(deploy_dir().join("runner-pools.example.json")).expect("example")
    );
    assert_no_secret_anywhere(&rig, &[&out]);
}

#[test]
fn recreate_destroys_and_recreates() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    rig.bootstrap(&[]);
    fs::write(rig.ct_file("/opt/marker"), "old container").expect("marker");
    rig.clear_calls();

    rig.bootstrap(&["--recreate"]);
    let calls = rig.calls();
    let pos = |p: &[&str]| {
        calls
            .iter()
            .position(|c| c.iter().zip(p).all(|(a, b)| a == b))
    };
    let stop = pos(&["pct", "stop", CTID]).expect("stopped before destroy");
    let destroy = pos(&["pct", "destroy", CTID]).expect("destroyed");
    let create = pos(&["pct", "create", CTID]).expect("created again");
    assert!(stop < destroy && destroy < create);
    assert!(!rig.ct_file("/opt/marker").exists(), "a new container");
    assert!(rig.ct_file("/etc/default/dispatcher").is_file());
    assert!(
        rig.systemctl_log()
            .iter()
            .any(|l| l == "restart dispatcher.service")
    );
}

#[test]
fn existing_ctid_with_another_hostname_is_refused() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    rig.bootstrap(&["--hostname", "other-ct"]);
    rig.clear_calls();
    let env_file = rig.path("op/dispatcher.env");
    let binary = rig.path("op/dispatcher");
    let out = rig.run(
        &[
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
            "--ctid",
            CTID,
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("container 150 exists with hostname 'other-ct'"),
        "{err}"
    );
    for c in rig.calls() {
        assert!(
            !(c[0] == "pct"
                && ["create", "destroy", "set", "push", "stop"].contains(&c[1].as_str())),
            "changed something: {c:?}"
        );
    }
}

#[test]
fn ct_template_file_is_used_as_is_and_environment_overrides_the_file() {
    let rig = Rig::new();
    let input = rig.full_input();
    rig.write_env_file(&input);
    let tmpl = rig.path("op/debian-12-standard_12.7-1_amd64.tar.zst");
    fs::write(&tmpl, "tarball").expect("template");
    let env_file = rig.path("op/dispatcher.env");
    let binary = rig.path("op/dispatcher");
    let out = rig.run(
        &[
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
        ],
        &[
            ("CT_TEMPLATE_FILE", tmpl.to_str().expect("utf-8")),
            ("REPO_NAME", "from-environment"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rig.calls_matching(&["pveam"]).is_empty(),
        "no template lookup with CT_TEMPLATE_FILE"
    );
    let create = rig.calls_matching(&["pct", "create"]);
    assert_eq!(create[0][3], tmpl.display().to_string());
    let written = parse_env_with_sh(&rig.ct_file("/etc/default/dispatcher"));
    assert_eq!(written["REPO_NAME"], "from-environment");
}

#[test]
fn present_template_is_not_downloaded_again() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    fs::write(
        rig.path("state/templates/debian-13-standard_13.1-2_amd64.tar.zst"),
        "t",
    )
    .expect("tmpl");
    rig.bootstrap(&[]);
    assert!(rig.calls_matching(&["pveam", "download"]).is_empty());
    assert_eq!(rig.calls_matching(&["pct", "create"]).len(), 1);
}

#[test]
fn dry_run_changes_nothing() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    let env_file = rig.path("op/dispatcher.env");
    let binary = rig.path("op/dispatcher");
    let out = rig.run(
        &[
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
            "--dry-run",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in rig.calls() {
        let mutating = match c[0].as_str() {
            "pct" => !["list", "config", "status"].contains(&c[1].as_str()),
            "pveam" => !["available", "list"].contains(&c[1].as_str()),
            "pvesm" => !["path", "status"].contains(&c[1].as_str()),
            "chown" | "cargo" => true,
            _ => false,
        };
        assert!(!mutating, "dry run ran {c:?}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would run: pct create 150"), "{err}");
    assert!(
        err.contains(
            "would run: pvesm add dir ghr-snippets --path /var/lib/ghr-snippets --content snippets"
        ),
        "{err}"
    );
    assert!(!rig.storage_cfg().contains("ghr-snippets"));
    assert!(!rig.ct("").exists());
    assert_no_secret_anywhere(&rig, &[&out]);
}

#[test]
fn without_binary_it_builds_with_cargo() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    let env_file = rig.path("op/dispatcher.env");
    let target = rig.path("op/target");
    let out = rig.run(
        &["--env-file", env_file.to_str().expect("utf-8")],
        &[("CARGO_TARGET_DIR", target.to_str().expect("utf-8"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rig.calls_matching(&["cargo"]),
        vec![vec![
            "cargo",
            "build",
            "--release",
            "--locked",
            "-p",
            "dispatcher-bin"
        ]]
    );
    let installed = fs::read_to_string(rig.ct_file("/usr/local/bin/dispatcher")).expect("binary");
    assert!(installed.contains("built-by-fake-cargo"));
}

#[test]
fn missing_settings_and_bad_lines_are_named() {
    let rig = Rig::new();
    let input: Vec<(&str, String)> = rig
        .full_input()
        .into_iter()
        .filter(|(k, _)| !["PROXMOX_NODE", "GITHUB_TOKEN", "GITHUB_APP_ID"].contains(k))
        .collect();
    rig.write_env_file(&input);
    let env_file = rig.path("op/dispatcher.env");
    let binary = rig.path("op/dispatcher");
    let args = [
        "--env-file",
        env_file.to_str().expect("utf-8"),
        "--binary",
        binary.to_str().expect("utf-8"),
    ];
    let out = rig.run(&args, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PROXMOX_NODE") && err.contains("GITHUB_TOKEN (or GITHUB_APP_ID)"),
        "{err}"
    );

    let mut text = fs::read_to_string(&env_file).expect("env");
    text.push_str("PROXMOX_NODE=pve\nGITHUB_TOKEN=x\nPROXMOX_TOKEN_SECRT=typo\nthis line is not an assignment MARK-GH-11\n");
    fs::write(&env_file, text).expect("env");
    let out = rig.run(&args, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown variable PROXMOX_TOKEN_SECRT"),
        "{err}"
    );
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    assert!(
        !err.contains("MARK-GH-11"),
        "a bad line is not echoed (it may hold a secret): {err}"
    );
    assert!(rig.calls_matching(&["pct", "create"]).is_empty());
}

#[test]
fn systemd_analyze_verify_the_unit() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing but CI is set: install systemd"
        );
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // verify needs the ExecStart binary to exist: point it at an executable stub; everything else as shipped.
    let stub = dir.path().join("dispatcher");
    fs::write(&stub, "#!/bin/sh\nexit 0\n").expect("stub");
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).expect("chmod");
    let unit = fs::read_to_string(deploy_dir().join("dispatcher.service")).expect("unit");
    for line in [
        "ExecStart=/usr/local/bin/dispatcher run",
        "EnvironmentFile=/etc/default/dispatcher",
        "User=dispatcher",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=-/opt/dispatcher/snippets",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=120s",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks `{line}`");
    }
    let patched = unit.replace("/usr/local/bin/dispatcher", stub.to_str().expect("utf-8"));
    let unit_path = dir.path().join("dispatcher.service");
    fs::write(&unit_path, patched).expect("unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );

    // The offline security score: hardening regressions show up as a higher exposure.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{text}");
}

#[test]
fn env_example_documents_every_variable_with_its_default() {
    let text =
        fs::read_to_string(deploy_dir().join("dispatcher.env.example")).expect("env example");
    let lines: Vec<&str> = text.lines().collect();
    for var in dispatcher_vars() {
        let at = lines
            .iter()
            .position(|l| {
                l.strip_prefix('#')
                    .unwrap_or(l)
                    .starts_with(&format!("{var}="))
            })
            .unwrap_or_else(|| panic!("{var} is not in dispatcher.env.example"));
        let comment = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("# "))
            .collect::<Vec<_>>();
        assert!(!comment.is_empty(), "{var} has no comment line");
        let required = [
            "PROXMOX_URL",
            "PROXMOX_NODE",
            "PROXMOX_TOKEN_ID",
            "PROXMOX_TOKEN_SECRET",
            "GITHUB_TOKEN",
        ];
        assert!(
            required.contains(&var)
                || var.starts_with("GITHUB_APP_")
                || comment.iter().any(|l| l.contains("Default")),
            "{var}: the comment does not state the default"
        );
    }
    // The example is accepted by the bootstrap parser: the only complaint is the empty required secrets.
    let rig = Rig::new();
    let binary = rig.path("op/dispatcher");
    let example = deploy_dir().join("dispatcher.env.example");
    let out = rig.run(
        &[
            "--env-file",
            example.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("missing required setting(s): PROXMOX_TOKEN_SECRET GITHUB_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("unknown variable"), "{err}");
}

#[test]
fn pools_example_uses_only_design_keys() {
    let text =
        fs::read_to_string(deploy_dir().join("runner-pools.example.json")).expect("pools example");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let pool_keys = [
        "name",
        "node",
        "template",
        "labels",
        "vmid_start",
        "vmid_end",
        "runner_name_prefix",
        "runner_user",
        "user_data_template",
        "storage",
        "max_runners",
        "injection",
        "full_clone",
        "clone_storage",
        "min_idle",
        "boot_timeout",
        "max_lifetime",
        "os",
        "runner_group_id",
        "nodes",
    ];
    let top = v.as_object().expect("object");
    assert!(
        top.keys().all(|k| k == "max_total_runners" || k == "pools"),
        "{top:?}"
    );
    let pools = top["pools"].as_array().expect("pools list");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["ubuntu-2404", "ubuntu-2204"]);
    for p in pools {
        for k in p.as_object().expect("pool object").keys() {
            assert!(pool_keys.contains(&k.as_str()), "unknown pool key {k}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The snippets storage (issue 15, item 1): a dedicated one, never the host's /var/lib/vz/snippets
// ---------------------------------------------------------------------------------------------------------

/// `input` with `key` set to `value` (added when absent).
fn with(
    mut input: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    match input.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = value.to_owned(),
        None => input.push((key, value.to_owned())),
    }
    input
}

fn without(input: Vec<(&'static str, String)>, key: &str) -> Vec<(&'static str, String)> {
    input.into_iter().filter(|(k, _)| *k != key).collect()
}

/// No call names anything in /var/lib/vz, and no snippets directory of `local` appeared.
fn assert_never_touches_var_lib_vz(rig: &Rig) {
    for c in rig.calls() {
        assert!(
            !c.iter().any(|a| a.contains("/var/lib/vz")),
            "touched /var/lib/vz: {c:?}"
        );
    }
    assert!(!rig.path("state/host/local").exists());
    if let Ok(conf) = fs::read_to_string(rig.ct("conf")) {
        assert!(!conf.contains("/var/lib/vz"), "{conf}");
    }
}

/// Runs the bootstrap and expects a refusal: one `bootstrap: error:` line, the last one, and nothing changed
/// on the host. Returns that line.
fn refused(rig: &Rig) -> String {
    let env_file = rig.path("op/dispatcher.env");
    let binary = rig.path("op/dispatcher");
    let out = rig.run(
        &[
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "--binary",
            binary.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "not refused:\n{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("bootstrap: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "{err}");
    for c in rig.calls() {
        let changes = match c[0].as_str() {
            "pct" => !["list", "config", "status"].contains(&c[1].as_str()),
            "pvesm" => c[1] == "add",
            "pveam" => c[1] == "download",
            "chown" | "cargo" => true,
            _ => false,
        };
        assert!(!changes, "a refused run changed something: {c:?}");
    }
    errors[0].to_owned()
}

#[test]
fn default_run_creates_the_dedicated_snippets_storage_and_never_touches_var_lib_vz() {
    let rig = Rig::new();
    rig.write_env_file(&without(rig.full_input(), "PROXMOX_STORAGE"));
    let out = rig.bootstrap(&[]);

    assert_eq!(
        rig.calls_matching(&["pvesm", "add"]),
        vec![vec![
            "pvesm",
            "add",
            "dir",
            "ghr-snippets",
            "--path",
            "/var/lib/ghr-snippets",
            "--content",
            "snippets"
        ]]
    );
    let cfg = rig.storage_cfg();
    assert!(
        cfg.contains("dir: ghr-snippets\n\tpath /var/lib/ghr-snippets\n\tcontent snippets\n"),
        "{cfg}"
    );
    // Its snippets directory, and nothing else, is bind-mounted and owned by the container's dispatcher.
    let host = rig.path("state/host/ghr-snippets/snippets");
    let conf = fs::read_to_string(rig.ct("conf")).expect("conf");
    assert!(
        conf.contains(&format!("mp0: {},mp=/srv/ghr/snippets\n", host.display())),
        "{conf}"
    );
    assert_eq!(
        rig.calls_matching(&["chown"]),
        vec![vec![
            "chown".to_owned(),
            "100990:100990".into(),
            host.display().to_string()
        ]]
    );
    let written = parse_env_with_sh(&rig.ct_file("/etc/default/dispatcher"));
    assert_eq!(written["PROXMOX_STORAGE"], "ghr-snippets");
    assert_never_touches_var_lib_vz(&rig);
    assert_no_secret_anywhere(&rig, &[&out]);

    // Again: the storage exists and is reused as it is.
    rig.clear_calls();
    rig.bootstrap(&[]);
    assert!(rig.calls_matching(&["pvesm", "add"]).is_empty());
    assert_eq!(rig.storage_cfg(), cfg);
    assert_never_touches_var_lib_vz(&rig);
}

#[test]
fn local_with_snippets_enabled_is_refused_with_a_one_line_reason() {
    let rig = Rig::new();
    rig.write_storage_cfg(
        &DEFAULT_STORAGE_CFG.replace("content iso,vztmpl,backup", "content iso,vztmpl,snippets"),
    );
    rig.write_env_file(&with(rig.full_input(), "PROXMOX_STORAGE", "local"));
    let err = refused(&rig);
    assert!(
        err.contains("PROXMOX_STORAGE=local also holds iso,vztmpl content"),
        "{err}"
    );
    assert!(err.contains("leave PROXMOX_STORAGE unset"), "{err}");
    assert_never_touches_var_lib_vz(&rig);
}

#[test]
fn a_snippets_storage_that_is_not_dedicated_is_refused() {
    for (storage, reason) in [
        (
            "dir: ghr-snippets\n\tpath /var/lib/vz\n\tcontent snippets\n",
            "its directory /var/lib/vz overlaps /var/lib/vz, the local storage's",
        ),
        (
            "dir: ghr-snippets\n\tpath /var/lib/vz/ghr/\n\tcontent snippets\n",
            "its directory /var/lib/vz/ghr overlaps /var/lib/vz",
        ),
        (
            "dir: ghr-snippets\n\tpath /srv/shared\n\tcontent snippets\n\ndir: isos\n\tpath /srv/shared/isos\n\tcontent iso\n",
            "its directory /srv/shared overlaps that of storage isos (/srv/shared/isos)",
        ),
        (
            "dir: ghr-snippets\n\tpath /etc/pve/ghr\n\tcontent snippets\n",
            "its directory /etc/pve/ghr is a system directory",
        ),
        (
            "dir: ghr-snippets\n\tpath /var/lib\n\tcontent snippets\n",
            "its directory /var/lib is a system directory",
        ),
        (
            "lvmthin: ghr-snippets\n\tthinpool data\n\tvgname pve\n\tcontent images\n",
            "a lvmthin storage cannot hold snippets",
        ),
        (
            "dir: ghr-snippets\n\tpath /var/lib/ghr-snippets\n\tcontent snippets\n\tdisable\n",
            "the storage is disabled",
        ),
        (
            "dir: ghr-snippets\n\tpath /var/lib/ghr-snippets\n\tcontent iso\n",
            "also holds iso content",
        ),
    ] {
        let rig = Rig::new();
        rig.write_storage_cfg(&format!("{DEFAULT_STORAGE_CFG}\n{storage}"));
        rig.write_env_file(&rig.full_input());
        let err = refused(&rig);
        assert!(
            err.contains("PROXMOX_STORAGE=ghr-snippets") && err.contains(reason),
            "{storage:?}: {err}"
        );
    }
}

#[test]
fn a_dedicated_storage_holding_files_not_ours_is_refused() {
    let rig = Rig::new();
    rig.write_storage_cfg(&format!(
        "{DEFAULT_STORAGE_CFG}\ndir: ghr-snippets\n\tpath /var/lib/ghr-snippets\n\tcontent snippets\n"
    ));
    let dir = rig.path("state/host/ghr-snippets/snippets");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("hook.pl"), "#!/usr/bin/perl\n").expect("hookscript");
    rig.write_env_file(&rig.full_input());
    let err = refused(&rig);
    assert!(
        err.contains(
            "holds files the dispatcher did not write (e.g. hook.pl, not owned by host uid 100990)"
        ),
        "{err}"
    );

    // A file owned by the container's dispatcher user (a snippet left behind by a crash) is the dispatcher's
    // own: accepted. Here the container's uid maps to the test's own uid.
    let uid = fs::metadata(dir.join("hook.pl"))
        .expect("stat")
        .uid()
        .to_string();
    let input = with(
        with(rig.full_input(), "DISPATCHER_UID", &uid),
        "CT_IDMAP_BASE",
        "0",
    );
    rig.write_env_file(&input);
    rig.bootstrap(&[]);
    assert!(rig.calls_matching(&["pvesm", "add"]).is_empty());
    assert_eq!(
        rig.calls_matching(&["chown"]),
        vec![vec![
            "chown".to_owned(),
            format!("{uid}:{uid}"),
            dir.display().to_string()
        ]]
    );
}

#[test]
fn agent_only_pools_get_no_snippets_storage_and_no_mount() {
    let check = |rig: &Rig| {
        assert!(rig.calls_matching(&["pvesm", "add"]).is_empty());
        assert!(rig.calls_matching(&["pvesm", "path"]).is_empty());
        assert!(rig.calls_matching(&["chown"]).is_empty());
        assert!(rig.calls_matching(&["pct", "set"]).is_empty());
        let conf = fs::read_to_string(rig.ct("conf")).expect("conf");
        assert!(!conf.contains("mp0"), "{conf}");
        assert_eq!(rig.storage_cfg(), DEFAULT_STORAGE_CFG);
        assert!(!rig.path("state/host/ghr-snippets").exists());
        assert!(rig.ct_file("/etc/default/dispatcher").is_file());
        assert_never_touches_var_lib_vz(rig);
    };

    // RUNNER_INJECTION=agent without a pools file.
    let rig = Rig::new();
    rig.write_env_file(&with(rig.full_input(), "RUNNER_INJECTION", "agent"));
    let out = rig.bootstrap(&[]);
    check(&rig);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("every pool uses agent injection: no snippet storage and no bind mount"),
        "{err}"
    );

    // A pools file whose pools all say agent (RUNNER_INJECTION left at its default, snippet).
    let rig = Rig::new();
    rig.write_env_file(&without(rig.full_input(), "RUNNER_INJECTION"));
    fs::write(
        rig.path("op/runner-pools.json"),
        r#"{"pools": [{"name": "win", "template": "w", "injection": "agent", "os": "windows"},
                      {"name": "lin", "template": "l", "injection": "AGENT", "storage": "local"}]}"#,
    )
    .expect("pools");
    rig.bootstrap(&[]);
    check(&rig);

    // Going from snippet to agent injection removes the mount an earlier run made.
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    rig.bootstrap(&[]);
    assert!(
        fs::read_to_string(rig.ct("conf"))
            .expect("conf")
            .contains("mp0: ")
    );
    rig.clear_calls();
    rig.write_env_file(&with(rig.full_input(), "RUNNER_INJECTION", "agent"));
    rig.bootstrap(&[]);
    assert_eq!(
        rig.calls_matching(&["pct", "set"]),
        vec![vec!["pct", "set", CTID, "--delete", "mp0"]]
    );
    assert_eq!(rig.calls_matching(&["pct", "reboot", CTID]).len(), 1);
    assert!(
        !fs::read_to_string(rig.ct("conf"))
            .expect("conf")
            .contains("mp0")
    );
}

#[test]
fn a_snippet_pool_on_another_storage_is_refused() {
    let rig = Rig::new();
    rig.write_env_file(&rig.full_input());
    fs::write(
        rig.path("op/runner-pools.json"),
        r#"{"pools": [{"name": "a", "template": "t", "injection": "agent"},
                      {"name": "b", "template": "t", "storage": "local"}]}"#,
    )
    .expect("pools");
    let err = refused(&rig);
    assert!(
        err.contains("a pool keeps its snippets on storage local, but the container gets only PROXMOX_STORAGE=ghr-snippets"),
        "{err}"
    );
    assert_never_touches_var_lib_vz(&rig);
}
