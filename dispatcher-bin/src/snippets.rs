//! The snippet directory (`SNIPPETS_DIR`): cloud-init user-data files that Proxmox reads when a VM starts.
//! Files hold a runner credential: written 0600 through a temporary file and a rename (never half-written),
//! deleted as soon as the VM's start task succeeded, and swept on deletion of the VM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// A folder of snippets on the storage named by `storage` (e.g. `local` → `/var/lib/vz/snippets`).
#[derive(Debug, Clone)]
pub struct SnippetStore {
    dir: PathBuf,
    storage: String,
}

impl SnippetStore {
    /// A store writing into `dir`, which Proxmox knows as `<storage>:snippets/`.
    pub fn new(dir: impl Into<PathBuf>, storage: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            storage: storage.into(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File name of a runner's snippet.
    pub fn file_name(runner_name: &str) -> String {
        format!("{runner_name}.yaml")
    }

    /// The `cicustom` value pointing at a runner's snippet on `storage` (a pool's `storage`, which must
    /// expose this folder as its `snippets/`).
    pub fn cicustom(storage: &str, runner_name: &str) -> String {
        format!("user={storage}:snippets/{}", Self::file_name(runner_name))
    }

    /// The storage named by `PROXMOX_STORAGE`.
    pub fn default_storage(&self) -> &str {
        &self.storage
    }

    /// Writes a runner's user-data (mode 0600, atomically).
    pub async fn write(
        &self,
        runner_name: &str,
        content: &SecretString,
    ) -> std::io::Result<PathBuf> {
        let dir = self.dir.clone();
        let name = Self::file_name(runner_name);
        let body = SecretString::from(content.expose_secret().to_owned());
        tokio::task::spawn_blocking(move || {
            let final_path = dir.join(&name);
            let tmp_path = dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp_path)?;
            let written = file
                .write_all(body.expose_secret().as_bytes())
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
            std::fs::rename(&tmp_path, &final_path)?;
            Ok(final_path)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Deletes a runner's snippet; `Ok(false)` when there was none.
    pub async fn remove(&self, runner_name: &str) -> std::io::Result<bool> {
        let path = self.dir.join(Self::file_name(runner_name));
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the folder exists and is writable (for `dispatcher check`).
    pub fn probe(&self) -> std::io::Result<()> {
        let probe = self.dir.join(".dispatcher-probe");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn write_is_private_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnippetStore::new(dir.path(), "local");
        let path = store
            .write("gh-runner-201-abc", &SecretString::from("secret-body"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret-body");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            SnippetStore::cicustom("local", "gh-runner-201-abc"),
            "user=local:snippets/gh-runner-201-abc.yaml"
        );
        assert!(store.remove("gh-runner-201-abc").await.unwrap());
        assert!(!store.remove("gh-runner-201-abc").await.unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
    }
}
