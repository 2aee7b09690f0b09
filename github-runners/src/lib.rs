//! `github-runners` — see the crate README (work in progress).
