# Kept in its own file: Packer 1.6.x (Debian's packer, used by the CI syntax check) rejects
# required_plugins, so CI validates every other *.pkr.hcl file without this one. `packer init` reads it.
packer {
  required_plugins {
    proxmox = {
      version = "~> 1.2"
      source  = "github.com/hashicorp/proxmox"
    }
  }
}
