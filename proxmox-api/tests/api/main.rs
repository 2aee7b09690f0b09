//! Integration tests of `proxmox-api` against mock PVE servers, one module per API area. Every
//! test checks the requests it sent against the PVE API schema (`common::schema`).

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod clone;
mod config;
mod delete;
mod errors;
mod power;
mod resources;
mod schema_conformance;
mod task_list;
mod tasks;
mod tls;
mod watch;
