# Example variables. Copy to packer.auto.pkrvars.hcl (git-ignored, loaded automatically) and edit:
#   cp images/windows-2022/packer.pkrvars.hcl images/windows-2022/packer.auto.pkrvars.hcl
# Secrets can instead come from the environment: PKR_VAR_proxmox_token, PKR_VAR_winrm_password, ...

proxmox_url      = "https://pve.example.org:8006/api2/json"
proxmox_username = "root@pam!packer"
proxmox_token    = "00000000-0000-0000-0000-000000000000"
proxmox_node     = "pve"
# insecure_skip_tls_verify = true # only for a self-signed PVE certificate

# Both ISOs must be on the ISO storage (packer-build.sh looks them up by file name), or give URLs + checksums.
iso_file        = "local:iso/SERVER_EVAL_x64FRE_en-us.iso"
virtio_iso_file = "local:iso/virtio-win.iso"

winrm_password        = "Change-me-1!"
cloudbase_init_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

# Optional overrides.
# windows_image_name  = "Windows Server 2022 SERVERSTANDARDCORE"
# windows_product_key = ""
# runner_version      = "2.328.0"
# runner_sha256       = "a73ae192b8b2b782e1d90c08923030930b0b96ed394fe56413a073cc6f694877"
