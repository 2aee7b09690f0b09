#!/usr/bin/env bash
# Builds the guest boot test's runner image: a minimal Debian trixie root (debootstrap) provisioned by the
# Ubuntu templates' own scripts (images/ubuntu-common/scripts/*, in the order the Packer template runs them,
# with the environment it gives them), run in a chroot. Then an ext4 disk image plus the kernel and initrd
# for a direct-kernel QEMU boot.
#
# The only differences from a Packer build, each honoured by the scripts themselves (plus SYSTEMD_OFFLINE=1,
# which makes systemctl and netplan act on the unit files without a running systemd, as in any chroot):
#   IMAGE_BUILD_CHROOT=true   no first boot to wait for, no service to start (00-, 10-)
#   RUNNER_TARBALL=FILE       the runner comes from a local tarball: the stand-in in tests/guest/standin/
#                             (the real download is not reachable here), checksum verified as usual (30-)
# What the Ubuntu installer does and Debian's debootstrap does not (hostname, fstab, cloud-init and the guest
# agent preinstalled, as on Ubuntu server) is done here, before the scripts run.
#
# Usage: build-image.sh            prints the image directory (cached: see GUEST_IMAGE_CACHE)
# Environment:
#   GUEST_IMAGE_CACHE   cache directory (default /var/cache/proxmox-gha-runners/guest-image); the image is
#                       keyed by the content of everything that goes into it, the debootstrap base by its
#                       package list, and downloaded .deb files are kept for the next cold build
#   GUEST_IMAGE_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   GUEST_IMAGE_REBUILD=true  ignore a cached image
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GUEST_IMAGE_CACHE:-/var/cache/proxmox-gha-runners/guest-image}"
mirror="${GUEST_IMAGE_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
runner_user=ci
# Ubuntu server has these before Packer's scripts run; 10-packages.sh installs the rest (build tools, sudo,
# openssh-server, ...). python3-cffi-backend: Debian's cloud-init needs it and does not pull it in. dbus:
# `systemctl start --wait` (the snippet's runcmd) needs the system bus. systemd-resolved: Ubuntu's resolver,
# which also answers for the VM's own (cloud-init-set) hostname.
base_packages=systemd-sysv,udev,dbus,systemd-resolved,linux-image-amd64,initramfs-tools,netplan.io,iproute2,cloud-init,qemu-guest-agent,python3-cffi-backend,eject
disk_size=4G

log() { printf 'build-image: %s\n' "$*" >&2; }

ubuntu_common="$repo/images/ubuntu-common"
packer_template="$repo/images/ubuntu-2404/ubuntu-runner.pkr.hcl"
# The provisioning scripts in the template's order.
mapfile -t scripts < <(grep -o 'ubuntu-common/scripts/[^"]*\.sh' "$packer_template")
if [ "${#scripts[@]}" -eq 0 ]; then
    log "no provisioning scripts found in $packer_template"
    exit 1
fi

content_key() {
    {
        printf '%s\n' "$suite" "$mirror" "$base_packages" "$disk_size" "${scripts[@]}"
        cat "$0"
        find "$ubuntu_common" "$here/standin" -type f -print0 | sort -z | xargs -0 sha256sum | sed "s|$repo/||"
    } | sha256sum | cut -c1-16
}
base_key=$(printf '%s\n' "$suite" "$mirror" "$base_packages" | sha256sum | cut -c1-16)
key=$(content_key)
image="$cache/image-$key"
if [ -f "$image/built" ] && [ "${GUEST_IMAGE_REBUILD:-false}" != "true" ]; then
    log "cached image $image"
    echo "$image"
    exit 0
fi

mkdir -p "$cache/debs"
work=$(mktemp -d "$cache/build.XXXXXX")
root="$work/root"
cleanup() {
    local m
    # Unmount first; never delete through a mount point.
    for m in "$root/sys" "$root/proc"; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
    done
    if grep -qF " $root/" /proc/mounts; then
        log "still mounted under $root; leaving $work"
        return
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
base="$cache/base-$base_key.tar"
if [ ! -f "$base" ]; then
    log "debootstrap $suite (first build: several minutes)"
    debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$base_packages" \
        "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        exit 1
    }
    tar -C "$root" --numeric-owner -cf "$base.tmp" . && mv "$base.tmp" "$base"
    find "$cache" -maxdepth 1 -name 'base-*.tar' ! -name "${base##*/}" -delete
    log "debootstrap done after $((SECONDS - started)) s"
else
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xf "$base"
fi

# --- what the Ubuntu installer would have done ---------------------------------------------------------------
echo runner-template > "$root/etc/hostname"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# apt in 10-packages.sh needs a resolver; the image's own resolv.conf (resolved's stub link) is put back below.
resolv_link=$(readlink "$root/etc/resolv.conf" || true)
rm -f "$root/etc/resolv.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# --- the template's provisioning, exactly as Packer runs it (file provisioner, then the scripts as root) ----
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mkdir -p "$root/tmp/runner-files" "$root/tmp/runner-scripts" "$root/tmp/runner-tarball"
cp -a "$ubuntu_common/files/." "$root/tmp/runner-files/"
tarball="$root/tmp/runner-tarball/actions-runner-standin.tar.gz"
tar -C "$here/standin" --owner=0 --group=0 -czf "$tarball" .
tarball_sha=$(sha256sum "$tarball" | cut -d' ' -f1)
for s in "${scripts[@]}"; do
    cp "$repo/images/$s" "$root/tmp/runner-scripts/"
done
for s in "${scripts[@]}"; do
    name=${s##*/}
    log "running $name in the chroot"
    t=$SECONDS
    chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 \
        FILES_DIR=/tmp/runner-files \
        RUNNER_USER="$runner_user" \
        RUNNER_PASSWORDLESS_SUDO=true \
        RUNNER_VERSION=0.0.0-standin \
        RUNNER_SHA256="$tarball_sha" \
        RUNNER_TARBALL=/tmp/runner-tarball/actions-runner-standin.tar.gz \
        IMAGE_BUILD_CHROOT=true \
        SYSTEMD_OFFLINE=1 \
        bash "/tmp/runner-scripts/$name" > "$work/$name.log" 2>&1 || {
        log "$name failed:"
        tail -n 40 "$work/$name.log" >&2
        exit 1
    }
    log "$name done ($((SECONDS - t)) s)"
done
# A small initramfs for QEMU's direct-kernel boot: the image's own, made for any hardware, takes twice as long
# to unpack and probe under emulation (the image itself keeps its own). Besides the root disk (virtio, ext4) it
# must hold the cloud-init drive's drivers (AHCI, SCSI CD-ROM): cloud-init's ds-identify runs as a systemd
# generator, before udev loads anything, and without /dev/sr0 it disables cloud-init for the boot.
kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
kver=${kernel##*/vmlinuz-}
cp -a "$root/etc/initramfs-tools" "$root/tmp/boot-initramfs"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/tmp/boot-initramfs/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic ahci sr_mod >> "$root/tmp/boot-initramfs/modules"
chroot "$root" mkinitramfs -d /tmp/boot-initramfs -o /tmp/initrd-boot.img "$kver" >> "$work/initramfs.log" 2>&1
umount "$root/sys" "$root/proc"
# A Packer-built template has booted once after its packages were installed: systemd's jobs for a changed
# /usr (ldconfig, journal catalog) have run and left these stamps, newer than /usr.
touch "$root/etc/.updated" "$root/var/.updated"
rm -f "$root/etc/resolv.conf"
if [ -n "$resolv_link" ]; then ln -s "$resolv_link" "$root/etc/resolv.conf"; else : > "$root/etc/resolv.conf"; fi

# --- disk image, kernel, initrd ------------------------------------------------------------------------------
out="$work/image"
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
mv "$root/tmp/initrd-boot.img" "$out/initrd.img"
rm -rf "$root/tmp/boot-initramfs"
mkfs.ext4 -q -F -L runner-root -d "$root" "$out/root.raw" "$disk_size" >&2
cat "$work"/*.log > "$out/build.log" 2>/dev/null || true
printf 'key=%s\nseconds=%s\nbuilt=%s\n' "$key" "$((SECONDS - started))" "$(date -u +%FT%TZ)" > "$out/built"
rm -rf "$image"
mv "$out" "$image"
# Older images are useless once the scripts changed.
find "$cache" -maxdepth 1 -name 'image-*' ! -name "image-$key" -exec rm -rf {} +
log "image $image built in $((SECONDS - started)) s"
echo "$image"
