#!/usr/bin/env bash
# Builds the Windows Server 2022 runner template: looks up the Windows ISO and the virtio-win ISO on the
# Proxmox ISO storage through the API and reuses them; an ISO that is not there is downloaded only if its URL
# is given (WINDOWS_ISO_URL + PKR_VAR_iso_checksum, VIRTIO_ISO_URL + PKR_VAR_virtio_iso_checksum).
# Then packer init + build. Settings: see images/lib/packer-build-common.sh. Extra arguments go to
# `packer build` (e.g. -var-file=...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/packer-build-common.sh
. "$here/../lib/packer-build-common.sh"

windows_iso_name="${WINDOWS_ISO_NAME:-SERVER_EVAL_x64FRE_en-us.iso}"
virtio_iso_name="${VIRTIO_ISO_NAME:-virtio-win.iso}"

pkb_load_settings
pkb_resolve_iso iso "$windows_iso_name" "${WINDOWS_ISO_URL:-}"
pkb_resolve_iso virtio_iso "$virtio_iso_name" "${VIRTIO_ISO_URL:-}"
pkb_packer "$here" "$@"
