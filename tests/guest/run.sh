#!/usr/bin/env bash
# The guest boot test (tests/guest/README.md): builds (or reuses) the runner image, renders what the dispatcher
# hands a VM with cloudinit-render, and boots it under QEMU once per case. The single command CI runs:
#
#   bash tests/guest/run.sh
#
# Needs root and the Debian packages qemu-system-x86, debootstrap, genisoimage (plus e2fsprogs, util-linux,
# systemd's journalctl and python3, which a Debian machine has). Without them it FAILS under CI=true and
# otherwise prints SKIPPED with a count: never a silent pass.
#
# Environment: GUEST_BOOT_JOBS (boots at a time, default 2), GUEST_BOOT_TIMEOUT (seconds per boot, default
# 600), GUEST_BOOT_CASES (comma-separated subset), GUEST_BOOT_KEEP=true (keep disks and console logs, and
# print where), GUEST_BOOT_WORK (default /var/tmp), and build-image.sh's GUEST_IMAGE_* variables.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cases="${GUEST_BOOT_CASES:-jit-snippet,v0-snippet,jit-agent,bad-owner}"
count=$(tr ',' '\n' <<< "$cases" | grep -c .)

missing=()
for tool in qemu-system-x86_64 debootstrap genisoimage mkfs.ext4 unshare mount journalctl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "$(id -u)" -eq 0 ] || missing+=("root (chroot, loop mount)")
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "guest-boot: FAIL: missing ${missing[*]} (apt-get install qemu-system-x86 debootstrap genisoimage)" >&2
        echo "guest-boot: 0 passed, $count failed"
        exit 1
    fi
    echo "guest-boot: SKIPPED $count guest boots: missing ${missing[*]}"
    echo "guest-boot: 0 passed, 0 failed, $count skipped"
    exit 0
fi

started=$SECONDS
image=$(bash "$here/build-image.sh")
echo "guest-boot: image $image ($(sed -n 's/^seconds=//p' "$image/built") s to build it; $((SECONDS - started)) s now)"

work=$(mktemp -d "${GUEST_BOOT_WORK:-/var/tmp}/guest-boot.XXXXXX")
if [ "${GUEST_BOOT_KEEP:-false}" != "true" ]; then
    trap 'rm -rf "$work"' EXIT
fi
inputs="$work/inputs"
mkdir -m 0700 "$inputs"

# Fake credentials shaped like the real ones: a JIT config is base64 of a JSON object holding the runner's
# .runner, .credentials and .credentials_rsaparams files (~3 KB); a registration token is 29 characters.
python3 - "$inputs" <<'PY'
import base64, json, os, secrets, string, sys
out = sys.argv[1]
def b64(n): return base64.b64encode(secrets.token_bytes(n)).decode()
files = {".runner": b64(300), ".credentials": b64(600), ".credentials_rsaparams": b64(1200)}
jit = base64.b64encode(json.dumps(files).encode()).decode()
token = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(29))
for name, value in (("jit.secret", jit), ("token.secret", token)):
    fd = os.open(os.path.join(out, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, value.encode()); os.close(fd)
PY

# What the dispatcher would write, through cloudinit-render's public API (examples/src/bin/guest-userdata.rs).
(cd "$repo" && cargo run -q --locked -p examples --bin guest-userdata -- \
    "$inputs" images/ubuntu-2404/cloud-init/runner-user-data.pkrtpl)

keep=()
[ "${GUEST_BOOT_KEEP:-false}" = "true" ] && keep=(--keep)
status=0
python3 "$here/guest_boot.py" --image "$image" --inputs "$inputs" --work "$work/boots" \
    --jobs "${GUEST_BOOT_JOBS:-2}" --timeout "${GUEST_BOOT_TIMEOUT:-600}" --cases "$cases" "${keep[@]}" || status=$?
echo "guest-boot: $((SECONDS - started)) s in all"
exit "$status"
