//! Simulated Proxmox VE and GitHub servers for end-to-end tests.
