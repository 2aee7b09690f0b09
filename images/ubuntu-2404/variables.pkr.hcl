# Input variables of the Ubuntu 24.04 runner template. Set them in packer.auto.pkrvars.hcl (see
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

# --- Installer ISO ----------------------------------------------------------------------------------------
variable "iso_file" {
  type        = string
  description = "An ISO already on Proxmox storage, e.g. local:iso/ubuntu-24.04.3-live-server-amd64.iso. When set, iso_url is ignored (packer-build.sh sets it when it finds the ISO)."
  default     = ""
}

variable "iso_url" {
  type        = string
  description = "Where to download the installer ISO when iso_file is empty."
  default     = "https://releases.ubuntu.com/24.04.3/ubuntu-24.04.3-live-server-amd64.iso"
}

variable "iso_checksum" {
  type        = string
  description = "Checksum of iso_url (sha256:<hex>, or file:<url of SHA256SUMS>)."
  default     = "sha256:c3514bf0056180d09376462a7a1b4f213c1d6e8ea67fae5c25099c6fd3d8274b"
}

variable "iso_download_pve" {
  type        = bool
  description = "Let the Proxmox node download iso_url itself (true) instead of Packer downloading and uploading it (false)."
  default     = true
}

variable "iso_storage_pool" {
  type        = string
  description = "Proxmox storage that holds ISO images (content type iso)."
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
  default     = "ubuntu-2404-runner-template"
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
  description = "Root disk size, e.g. 64G."
  default     = "64G"
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
variable "runner_user" {
  type        = string
  description = "Non-root user that runs the jobs; also the SSH user during the build (its password is locked at the end)."
  default     = "ci"
}

variable "runner_passwordless_sudo" {
  type        = bool
  description = "Give the runner user passwordless sudo, like GitHub-hosted runners (a job can then read anything on its VM)."
  default     = true
}

variable "ssh_password" {
  type        = string
  description = "Build-time SSH password of runner_user (locked at the end of the build)."
  sensitive   = true
}

variable "ssh_password_hash" {
  type        = string
  description = "SHA-512 crypt hash of ssh_password for the installer: openssl passwd -6 'password'."
  sensitive   = true
}

variable "runner_version" {
  type        = string
  description = "GitHub Actions runner version installed in /opt/actions-runner (recorded in the template description)."
  default     = "2.328.0"
}

variable "runner_sha256" {
  type        = string
  description = "SHA-256 of actions-runner-linux-x64-<runner_version>.tar.gz (from the runner's release notes)."
  default     = "01066fad3a2893e63e6ca880ae3a1fad5bf9329d60e77ee15f2b97c148c3cd4e"
}

# --- Fixed per directory ----------------------------------------------------------------------------------
locals {
  ubuntu_release = "24.04"
  image_slug     = "ubuntu-2404"
}
