#!/usr/bin/env bash
# Builds the Ubuntu 22.04 runner template: reuses the installer ISO if it is already on the Proxmox ISO
# storage (found through the API), otherwise lets Packer/Proxmox download it; then packer init + build.
# Settings: see images/lib/packer-build-common.sh. Extra arguments go to `packer build`
# (e.g. -var-file=...). ISO_URL overrides the download URL (set PKR_VAR_iso_checksum to match).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/packer-build-common.sh
. "$here/../lib/packer-build-common.sh"

iso_url="${ISO_URL:-https://releases.ubuntu.com/22.04.5/ubuntu-22.04.5-live-server-amd64.iso}"

pkb_load_settings
pkb_resolve_iso iso "${iso_url##*/}" "$iso_url"
pkb_packer "$here" "$@"
