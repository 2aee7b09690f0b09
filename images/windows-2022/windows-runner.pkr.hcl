# Windows Server 2022 runner template for ephemeral GitHub Actions runners on Proxmox VE.

locals {
  # The runner version is recorded in the template's Proxmox description (runner version freshness).
  template_description = join("\n", [
    "Windows Server 2022 ephemeral GitHub Actions runner template.",
    "",
    "- actions/runner: ${var.runner_version} (C:\\actions-runner)",
    "- credential: JIT config at C:\\ProgramData\\actions-runner-jit\\jitconfig (scheduled task ActionsRunnerJit, as local user ghrunner)",
    "- cloudbase-init: ${var.cloudbase_init_url}",
    "- built: ${timestamp()}",
  ])
  use_iso_file        = var.iso_file != ""
  use_virtio_iso_file = var.virtio_iso_file != ""
  # The Administrator password goes into an XML file: escape it.
  winrm_password_xml = replace(replace(replace(replace(replace(var.winrm_password,
  "&", "&amp;"), "<", "&lt;"), ">", "&gt;"), "\"", "&quot;"), "'", "&apos;")
}

source "proxmox-iso" "windows" {
  proxmox_url              = var.proxmox_url
  username                 = var.proxmox_username
  token                    = var.proxmox_token
  insecure_skip_tls_verify = var.insecure_skip_tls_verify
  node                     = var.proxmox_node
  task_timeout             = "10m"

  vm_id                = var.vm_id
  vm_name              = "packer-windows-2022-runner"
  template_name        = var.template_name
  template_description = local.template_description
  tags                 = "windows-2022;github-runner;runner-${var.runner_version}"

  os              = "win11"
  machine         = "q35"
  bios            = "seabios"
  cpu_type        = var.cpu_type
  sockets         = 1
  cores           = var.cores
  memory          = var.memory
  qemu_agent      = true
  scsi_controller = "virtio-scsi-single"

  disks {
    type         = "scsi"
    disk_size    = var.disk_size
    storage_pool = var.vm_storage_pool
    format       = "raw"
    io_thread    = true
    discard      = true
  }

  network_adapters {
    model    = "virtio"
    bridge   = var.bridge
    vlan_tag = var.vlan_tag
    firewall = false
  }

  boot_iso {
    type             = "ide"
    iso_file         = local.use_iso_file ? var.iso_file : null
    iso_url          = local.use_iso_file ? null : var.iso_url
    iso_checksum     = local.use_iso_file ? null : var.iso_checksum
    iso_download_pve = local.use_iso_file ? null : var.iso_download_pve
    iso_storage_pool = var.iso_storage_pool
    unmount          = true
  }

  # virtio-win: storage/network drivers for Setup, guest tools and the QEMU guest agent.
  additional_iso_files {
    type             = "sata"
    iso_file         = local.use_virtio_iso_file ? var.virtio_iso_file : null
    iso_url          = local.use_virtio_iso_file ? null : var.virtio_iso_url
    iso_checksum     = local.use_virtio_iso_file ? null : var.virtio_iso_checksum
    iso_download_pve = local.use_virtio_iso_file ? null : var.iso_download_pve
    iso_storage_pool = var.iso_storage_pool
    unmount          = true
  }

  # Autounattend.xml and the first-logon script on a small CD that Packer builds (needs xorriso or mkisofs).
  additional_iso_files {
    type     = "sata"
    cd_label = "AUTOUNATTEND"
    cd_files = ["${path.root}/scripts/bootstrap-winrm.ps1"]
    cd_content = {
      "Autounattend.xml" = templatefile("${path.root}/Autounattend.xml", {
        winrm_password_xml  = local.winrm_password_xml
        windows_image_name  = var.windows_image_name
        windows_product_key = var.windows_product_key
      })
    }
    iso_storage_pool = var.iso_storage_pool
    unmount          = true
  }

  # Proxmox regenerates this drive for every clone (ConfigDrive v2 for Windows); cloudbase-init reads it.
  cloud_init              = true
  cloud_init_storage_pool = var.vm_storage_pool

  boot_wait = "10s"

  communicator   = "winrm"
  winrm_username = "Administrator"
  winrm_password = var.winrm_password
  winrm_port     = 5985
  winrm_use_ssl  = false
  winrm_timeout  = "3h"
}

build {
  name    = "runner"
  sources = ["source.proxmox-iso.windows"]

  provisioner "powershell" {
    inline = ["New-Item -ItemType Directory -Force -Path 'C:\\Windows\\Temp\\runner-files' | Out-Null"]
  }

  # run-jit.ps1 and the cloudbase-init configuration.
  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "C:\\Windows\\Temp\\runner-files"
  }

  provisioner "powershell" {
    environment_vars = [
      "FILES_DIR=C:\\Windows\\Temp\\runner-files",
      "RUNNER_VERSION=${var.runner_version}",
      "RUNNER_SHA256=${var.runner_sha256}",
      "CLOUDBASE_INIT_URL=${var.cloudbase_init_url}",
      "CLOUDBASE_INIT_SHA256=${var.cloudbase_init_sha256}",
    ]
    scripts = [
      "${path.root}/scripts/install-runner.ps1",
      "${path.root}/scripts/install-cloudbase-init.ps1",
      "${path.root}/scripts/install-jit-task.ps1",
    ]
  }

  # WinRM off, random Administrator password, sysprep /generalize with cloudbase-init's Unattend.xml.
  provisioner "powershell" {
    scripts = ["${path.root}/scripts/finalize.ps1"]
  }
}
