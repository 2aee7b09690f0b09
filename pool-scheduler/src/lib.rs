//! `pool-scheduler` — see the crate README (work in progress).
