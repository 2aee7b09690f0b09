//! Lists the Proxmox cluster's QEMU VMs (vmid, node, status, name, tags) as a table.
//!
//! Configured from the same environment variables as the dispatcher: `PROXMOX_URL`
//! (`https://host:8006/api2/json`), `PROXMOX_TOKEN_ID` (`user@realm!name`),
//! `PROXMOX_TOKEN_SECRET`, and optionally `PROXMOX_VERIFY_SSL`, `PROXMOX_CA_CERT`,
//! `PROXMOX_TLS_FINGERPRINT`. Prints one line and exits 1 on any failure.
//!
//! ```text
//! cargo run -p examples --bin list-vms
//! ```

use std::process::ExitCode;

use proxmox_api::{ClusterVm, ProxmoxApi, ProxmoxClient, ProxmoxConfig};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("list-vms: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), proxmox_api::Error> {
    let config = ProxmoxConfig::from_lookup(|k| std::env::var(k).ok())?;
    let client = ProxmoxClient::new(config)?;
    let mut vms = client.cluster_vms().await?;
    vms.sort_by_key(|vm| vm.vmid);
    print!("{}", render(&vms));
    Ok(())
}

/// The table: a header, one row per VM, columns padded to their widest cell.
fn render(vms: &[ClusterVm]) -> String {
    let header = ["VMID", "NODE", "STATUS", "NAME", "TAGS"].map(String::from);
    let rows: Vec<[String; 5]> = vms
        .iter()
        .map(|vm| {
            let status = match (vm.template, vm.status.as_deref()) {
                (true, _) => "template".to_owned(),
                (false, Some(s)) => s.to_owned(),
                (false, None) => "-".to_owned(),
            };
            let tags = if vm.tags.is_empty() {
                "-".to_owned()
            } else {
                vm.tags.to_string()
            };
            [
                vm.vmid.to_string(),
                vm.node.to_string(),
                status,
                vm.name.clone().unwrap_or_else(|| "-".to_owned()),
                tags,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no QEMU VMs)\n");
    }
    out
}
