#!/usr/bin/env bash
# cloud-init for the Proxmox cloud-init drive, and a netplan that matches any NIC name.
set -euo pipefail
files="${FILES_DIR:-/tmp/runner-files}"

# The installer leaves configuration that would stop a clone from reading the Proxmox drive
# (datasource_list: [None]) or pin the build VM's network.
rm -f /etc/cloud/cloud.cfg.d/99-installer.cfg \
      /etc/cloud/cloud.cfg.d/90-installer-network.cfg \
      /etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg \
      /etc/cloud/ds-identify.cfg
install -m 0644 "$files/99-runner-datasource.cfg" /etc/cloud/cloud.cfg.d/99-runner-datasource.cfg
install -m 0644 "$files/99-runner-network.cfg" /etc/cloud/cloud.cfg.d/99-runner-network.cfg

# Replace every netplan file from the installer/cloud-init with the one that matches any NIC name.
find /etc/netplan -maxdepth 1 -type f -name '*.yaml' ! -name '90-runner-dhcp.yaml' -delete
install -m 0600 "$files/90-runner-dhcp.yaml" /etc/netplan/90-runner-dhcp.yaml
netplan generate

# cloud-init's stage units. cloud-init 24.3 renamed cloud-init.service to cloud-init-network.service and 24.4
# added cloud-init-main.service; enabling a name the installed release does not have fails the build (found
# by the guest boot test on Debian's 25.1), so enable the ones that exist, and at least the final stage.
stages=()
for unit in cloud-init-main cloud-init-local cloud-init-network cloud-init cloud-config cloud-final; do
    if [ -n "$(systemctl list-unit-files --no-legend "$unit.service" 2>/dev/null)" ]; then
        stages+=("$unit.service")
    fi
done
case " ${stages[*]} " in
    *" cloud-final.service "*) ;;
    *) echo "cloud-init's units are missing (found: ${stages[*]:-none})" >&2; exit 1 ;;
esac
systemctl enable "${stages[@]}"
