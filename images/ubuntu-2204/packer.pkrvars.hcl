# Example variables. Copy to packer.auto.pkrvars.hcl (git-ignored, loaded automatically) and edit:
#   cp images/ubuntu-2204/packer.pkrvars.hcl images/ubuntu-2204/packer.auto.pkrvars.hcl
# Secrets can instead come from the environment: PKR_VAR_proxmox_token, PKR_VAR_ssh_password, ...

proxmox_url      = "https://pve.example.org:8006/api2/json"
proxmox_username = "root@pam!packer"
proxmox_token    = "00000000-0000-0000-0000-000000000000"
proxmox_node     = "pve"
# insecure_skip_tls_verify = true # only for a self-signed PVE certificate

ssh_password      = "change-me"
ssh_password_hash = "$6$examplesalt$replace.with.output.of.openssl.passwd.6"

# Optional overrides.
# iso_file         = "local:iso/ubuntu-22.04.5-live-server-amd64.iso"
# iso_url          = "https://releases.ubuntu.com/22.04.5/ubuntu-22.04.5-live-server-amd64.iso"
# iso_checksum     = "sha256:9bc6028870aef3f74f4e16b900008179e78b130e6b0b9a140635434a46aa98b0"
# iso_download_pve = false
# vm_storage_pool  = "local-lvm"
# bridge           = "vmbr0"
# runner_user      = "ci"
# runner_version   = "2.328.0"
# runner_sha256    = "01066fad3a2893e63e6ca880ae3a1fad5bf9329d60e77ee15f2b97c148c3cd4e"
