//! `proxmox-api` — see the crate README (work in progress).
