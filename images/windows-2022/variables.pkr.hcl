# Input variables of the Windows Server 2022 runner template. Set them in packer.auto.pkrvars.hcl (see
# packer.pkrvars.hcl) or as PKR_VAR_<name> environment variables (packer-build.sh does the latter).

# --- Proxmox API ----------------------------------------------------------------------------------------
variable "proxmox_url" {
  type        = string
  description = "Proxmox API URL including the path, e.g. https://pve.example.org:8006/api2/json."
}

variable "proxmox_username" {
  type        = string
  description = "API token id, user@realm!tokenname (e.g. root@pam!packer)."
}

variable "proxmox_token" {
  type        = string
  description = "Secret of the API token named by proxmox_username."
  sensitive   = true
}

variable "proxmox_node" {
  type        = string
  description = "Proxmox node that builds the VM (and holds the template)."
  default     = "pve"
}

variable "insecure_skip_tls_verify" {
  type        = bool
  description = "Opt-in: do not verify the Proxmox API's TLS certificate (self-signed PVE certificate)."
  default     = false
}

# --- ISOs -------------------------------------------------------------------------------------------------
variable "iso_file" {
  type        = string
  description = "Windows Server 2022 ISO on Proxmox storage, e.g. local:iso/SERVER_EVAL_x64FRE_en-us.iso (packer-build.sh finds it). When set, iso_url is ignored."
  default     = ""
}

variable "iso_url" {
  type        = string
  description = "Where to download the Windows Server 2022 ISO when iso_file is empty (Microsoft's links expire; prefer iso_file)."
  default     = ""
}

variable "iso_checksum" {
  type        = string
  description = "Checksum of iso_url (sha256:<hex>)."
  default     = ""
}

variable "iso_download_pve" {
  type        = bool
  description = "Let the Proxmox node download the ISO URLs itself (true) instead of Packer downloading and uploading them (false)."
  default     = true
}

variable "virtio_iso_file" {
  type        = string
  description = "virtio-win driver ISO on Proxmox storage, e.g. local:iso/virtio-win.iso (packer-build.sh finds it). When set, virtio_iso_url is ignored."
  default     = ""
}

variable "virtio_iso_url" {
  type        = string
  description = "Where to download the virtio-win ISO when virtio_iso_file is empty."
  default     = ""
}

variable "virtio_iso_checksum" {
  type        = string
  description = "Checksum of virtio_iso_url (sha256:<hex>)."
  default     = ""
}

variable "iso_storage_pool" {
  type        = string
  description = "Proxmox storage that holds ISO images (content type iso); also receives the generated Autounattend CD."
  default     = "local"
}

# --- VM sizing and storage --------------------------------------------------------------------------------
variable "vm_id" {
  type        = number
  description = "VMID of the build VM and of the resulting template; 0 lets Proxmox pick the next free id."
  default     = 0
}

variable "template_name" {
  type        = string
  description = "Name of the resulting template (the dispatcher's pools refer to it)."
  default     = "windows-2022-runner-template"
}

variable "cores" {
  type        = number
  description = "vCPU cores of the template (clones inherit them)."
  default     = 4
}

variable "memory" {
  type        = number
  description = "Memory of the template in MiB."
  default     = 8192
}

variable "cpu_type" {
  type        = string
  description = "QEMU CPU type; x86-64-v2-AES is migration safe, host is fastest."
  default     = "x86-64-v2-AES"
}

variable "disk_size" {
  type        = string
  description = "System disk size, e.g. 96G."
  default     = "96G"
}

variable "vm_storage_pool" {
  type        = string
  description = "Proxmox storage for the VM disk and its cloud-init drive."
  default     = "local-lvm"
}

variable "bridge" {
  type        = string
  description = "Proxmox bridge of the VM's NIC."
  default     = "vmbr0"
}

variable "vlan_tag" {
  type        = string
  description = "VLAN tag of the NIC; empty for none."
  default     = ""
}

# --- Guest ------------------------------------------------------------------------------------------------
variable "winrm_password" {
  type        = string
  description = "Administrator password during the build (WinRM); replaced by a random one before sysprep."
  sensitive   = true
}

variable "windows_image_name" {
  type        = string
  description = "Image to install from install.wim (/IMAGE/NAME), e.g. Windows Server 2022 SERVERSTANDARD (Desktop Experience) or ... SERVERSTANDARDCORE."
  default     = "Windows Server 2022 SERVERSTANDARD"
}

variable "windows_product_key" {
  type        = string
  description = "Product key for the installer; empty for evaluation media, a KMS client (GVLK) key for volume media."
  default     = ""
  sensitive   = true
}

variable "runner_version" {
  type        = string
  description = "GitHub Actions runner version installed in C:\\actions-runner (recorded in the template description)."
  default     = "2.328.0"
}

variable "runner_sha256" {
  type        = string
  description = "SHA-256 of actions-runner-win-x64-<runner_version>.zip (from the runner's release notes)."
  default     = "a73ae192b8b2b782e1d90c08923030930b0b96ed394fe56413a073cc6f694877"
}

variable "cloudbase_init_url" {
  type        = string
  description = "cloudbase-init MSI to install."
  default     = "https://www.cloudbase.it/downloads/CloudbaseInitSetup_1_1_6_x64.msi"
}

variable "cloudbase_init_sha256" {
  type        = string
  description = "SHA-256 of the MSI at cloudbase_init_url (cloudbase.it publishes none: compute it once from a download you trust)."
}
