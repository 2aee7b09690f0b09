//! The crate's one error type.

/// What can fail in a pass, a provision or a deletion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Proxmox API call failed.
    #[error("proxmox: {0}")]
    Proxmox(#[from] proxmox_api::Error),
    /// A GitHub API call failed.
    #[error("github: {0}")]
    GitHub(#[from] github_runners::Error),
    /// Rendering the runner's user-data or agent payload failed.
    #[error("render: {0}")]
    Render(#[from] cloudinit_render::Error),
    /// Writing or deleting a snippet failed.
    #[error("snippet {path}: {source}")]
    Snippet {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The pool's template VM was not found in the cluster.
    #[error("pool {pool:?}: template {template:?} not found (a VM with template=1 and that name)")]
    TemplateNotFound {
        /// Pool name.
        pool: String,
        /// Template name.
        template: String,
    },
    /// The VMID chosen for a clone is held by something else (another node, a container, a race).
    #[error("VMID {vmid} is already taken: {message}")]
    VmidTaken {
        /// The id.
        vmid: u32,
        /// What Proxmox said.
        message: String,
    },
    /// The guest agent did not answer before the boot timeout.
    #[error("VM {vmid}: guest agent did not answer within {seconds} s")]
    AgentTimeout {
        /// The VM.
        vmid: u32,
        /// How long we waited.
        seconds: u64,
    },
    /// A VM no longer carries the marks that make it ours; nothing was done to it.
    #[error("VM {vmid} is not ours any more ({why}); left untouched")]
    NotOwned {
        /// The VM.
        vmid: u32,
        /// Which mark is missing.
        why: String,
    },
    /// The service is shutting down; the work was rolled back.
    #[error("cancelled by shutdown")]
    Cancelled,
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Proxmox(e) => e.is_retryable(),
            Error::GitHub(e) => e.is_retryable(),
            Error::VmidTaken { .. } | Error::AgentTimeout { .. } => true,
            Error::Snippet { .. } | Error::TemplateNotFound { .. } => true,
            Error::Render(_) | Error::NotOwned { .. } | Error::Cancelled => false,
        }
    }

    /// For a failure that will repeat identically on every attempt (the configuration, a permission or the
    /// cluster must change first), the bounded reason a pool is held for; `None` for transient failures
    /// (5xx, timeouts, lock timeouts, connection errors, a taken VMID) that the ordinary back-off retries.
    pub fn hold_reason(&self) -> Option<&'static str> {
        match self {
            Error::Render(_) => Some("render_error"),
            Error::TemplateNotFound { .. } => Some("template_missing"),
            Error::Snippet { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                Some("snippet_storage")
            }
            Error::Proxmox(e) => match e.status() {
                Some(401 | 403) => Some("proxmox_permission"),
                Some(400) => Some("proxmox_parameter"),
                Some(501) => Some("proxmox_unsupported"),
                _ => None,
            },
            Error::GitHub(e) => match e {
                github_runners::Error::Auth(_) => Some("github_permission"),
                github_runners::Error::Api {
                    status: 401 | 403 | 404 | 422,
                    ..
                } => Some("github_permission"),
                _ => None,
            },
            _ => None,
        }
    }
}
