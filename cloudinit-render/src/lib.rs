//! `cloudinit-render` — see the crate README (work in progress).
