#!/usr/bin/env bash
# The GitHub Actions runner at /opt/actions-runner, checksum verified, owned by the runner user.
set -euo pipefail
: "${RUNNER_USER:?RUNNER_USER must be set}"
: "${RUNNER_VERSION:?RUNNER_VERSION must be set}"
: "${RUNNER_SHA256:?RUNNER_SHA256 must be set}"

runner_dir=/opt/actions-runner
tarball="actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz"
url="https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/${tarball}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# RUNNER_TARBALL=/path/to/file.tar.gz: use that local tarball instead of downloading (offline builds, and the
# guest boot test, which installs a stand-in runner this way). The checksum is verified all the same.
if [ -n "${RUNNER_TARBALL:-}" ]; then
    echo "using the local runner tarball $RUNNER_TARBALL instead of $url"
    cp -- "$RUNNER_TARBALL" "$tmp/$tarball"
else
    echo "downloading $url"
    curl -fsSL --retry 5 --retry-delay 5 -o "$tmp/$tarball" "$url"
fi
printf '%s  %s\n' "$RUNNER_SHA256" "$tmp/$tarball" | sha256sum --check --strict -

install -d -m 0755 -o "$RUNNER_USER" -g "$RUNNER_USER" "$runner_dir"
tar -xzf "$tmp/$tarball" -C "$runner_dir"
# The runner's own dependency installer (libicu, libssl, ...).
"$runner_dir/bin/installdependencies.sh"
chown -R "$RUNNER_USER:$RUNNER_USER" "$runner_dir"

# Record what is installed; the template's Proxmox description says the same.
printf '%s\n' "$RUNNER_VERSION" > "$runner_dir/.runner-version"
chown "$RUNNER_USER:$RUNNER_USER" "$runner_dir/.runner-version"
