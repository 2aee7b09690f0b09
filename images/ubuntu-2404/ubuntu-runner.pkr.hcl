# Ubuntu runner template for ephemeral GitHub Actions runners on Proxmox VE.
# This file is identical in images/ubuntu-2404/ and images/ubuntu-2204/ (a test checks it); what differs
# between the releases lives in variables.pkr.hcl (defaults and the `ubuntu_release`/`image_slug` locals).

locals {
  # The runner version is recorded in the template's Proxmox description (runner version freshness).
  template_description = join("\n", [
    "Ubuntu ${local.ubuntu_release} ephemeral GitHub Actions runner template.",
    "",
    "- actions/runner: ${var.runner_version} (/opt/actions-runner)",
    "- runner user: ${var.runner_user}",
    "- credential: JIT config at /var/lib/actions-runner-jit/jitconfig (actions-runner-jit.path)",
    "- built: ${timestamp()}",
  ])
  # Either an ISO already on Proxmox storage or a URL to download; never both.
  use_iso_file = var.iso_file != ""
}

source "proxmox-iso" "ubuntu" {
  proxmox_url              = var.proxmox_url
  username                 = var.proxmox_username
  token                    = var.proxmox_token
  insecure_skip_tls_verify = var.insecure_skip_tls_verify
  node                     = var.proxmox_node
  task_timeout             = "10m"

  vm_id                = var.vm_id
  vm_name              = "packer-${local.image_slug}-runner"
  template_name        = var.template_name
  template_description = local.template_description
  tags                 = "${local.image_slug};github-runner;runner-${var.runner_version}"

  os              = "l26"
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
    ssd          = true
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

  # Proxmox regenerates this drive for every clone from its cloud-init options (and cicustom snippets).
  cloud_init              = true
  cloud_init_storage_pool = var.vm_storage_pool

  # Subiquity autoinstall served by Packer's HTTP server.
  http_content = {
    "/user-data" = templatefile("${path.root}/http/user-data", {
      hostname          = "packer-${local.image_slug}"
      runner_user       = var.runner_user
      ssh_password_hash = var.ssh_password_hash
    })
    "/meta-data" = file("${path.root}/http/meta-data")
  }

  boot_wait = "5s"
  boot_command = [
    "<wait3>c<wait3>",
    "linux /casper/vmlinuz --- autoinstall ds='nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/'<enter><wait3>",
    "initrd /casper/initrd<enter><wait3>",
    "boot<enter>",
  ]

  communicator           = "ssh"
  ssh_username           = var.runner_user
  ssh_password           = var.ssh_password
  ssh_timeout            = "60m"
  ssh_handshake_attempts = 50
}

build {
  name    = "runner"
  sources = ["source.proxmox-iso.ubuntu"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/runner-files"]
  }

  # Guest files: JIT units, run-jit.sh, run-once.sh, netplan, cloud-init and sshd settings.
  provisioner "file" {
    source      = "${path.root}/../ubuntu-common/files/"
    destination = "/tmp/runner-files"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "FILES_DIR=/tmp/runner-files",
      "RUNNER_USER=${var.runner_user}",
      "RUNNER_PASSWORDLESS_SUDO=${var.runner_passwordless_sudo}",
      "RUNNER_VERSION=${var.runner_version}",
      "RUNNER_SHA256=${var.runner_sha256}",
    ]
    scripts = [
      "${path.root}/../ubuntu-common/scripts/00-wait-cloud-init.sh",
      "${path.root}/../ubuntu-common/scripts/10-packages.sh",
      "${path.root}/../ubuntu-common/scripts/20-runner-user.sh",
      "${path.root}/../ubuntu-common/scripts/30-actions-runner.sh",
      "${path.root}/../ubuntu-common/scripts/40-runner-units.sh",
      "${path.root}/../ubuntu-common/scripts/50-cloud-init-network.sh",
      "${path.root}/../ubuntu-common/scripts/90-cleanup.sh",
    ]
  }
}
