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
            // A fresh, unpredictable name created exclusively: an existing file or a planted symlink at that
            // path makes the write fail instead of being followed.
            let tmp_path = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
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

    /// Deletes the snippet files (and temporary files) of runners for which `is_ours(runner)` holds but
    /// `keep(runner)` does not: what a crash, a failed delete or a rollback left behind. Other files are left
    /// alone. Returns how many files were deleted.
    pub async fn sweep(
        &self,
        is_ours: impl Fn(&str) -> bool + Send + 'static,
        keep: impl Fn(&str) -> bool + Send + 'static,
    ) -> std::io::Result<usize> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                let Some(runner) = runner_of(file_name) else {
                    continue;
                };
                if !is_ours(runner) || keep(runner) {
                    continue;
                }
                // Never follow a link: only plain files of ours are removed.
                if entry.file_type().is_ok_and(|t| t.is_file())
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Whether the folder exists and is writable (for `dispatcher check`).
    pub fn probe(&self) -> std::io::Result<()> {
        let probe = self.dir.join(".dispatcher-probe");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }
}

/// The runner a snippet or temporary file belongs to: `<runner>.yaml` or `.<runner>.yaml.<hex>.tmp`.
fn runner_of(file_name: &str) -> Option<&str> {
    if let Some(rest) = file_name.strip_prefix('.') {
        let rest = rest.strip_suffix(".tmp")?;
        let (yaml, hex) = rest.rsplit_once('.')?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return yaml.strip_suffix(".yaml");
    }
    file_name.strip_suffix(".yaml")
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

    #[tokio::test]
    async fn sweep_removes_only_leftovers_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnippetStore::new(dir.path(), "local");
        for f in [
            "gh-runner-201-abc.yaml",
            "gh-runner-202-abc.yaml",
            ".gh-runner-203-abc.yaml.00ff00ff00ff00ff.tmp",
            "someone-else.yaml",
            "hookscript.pl",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("gh-runner-204-abc.yaml"))
            .unwrap();
        let removed = store
            .sweep(
                |r| r.starts_with("gh-runner-"),
                |r| r == "gh-runner-202-abc",
            )
            .await
            .unwrap();
        assert_eq!(removed, 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "gh-runner-202-abc.yaml",
                "gh-runner-204-abc.yaml",
                "hookscript.pl",
                "someone-else.yaml"
            ]
        );
        assert!(std::fs::metadata("/etc/passwd").is_ok());
    }

    #[tokio::test]
    async fn a_planted_file_at_the_temporary_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnippetStore::new(dir.path(), "local");
        // Whatever sits beside, the write goes to a fresh exclusive file and lands at the final name.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(".gh-runner-1-a.yaml.tmp"))
            .unwrap();
        let path = store
            .write("gh-runner-1-a", &SecretString::from("s"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "s");
        assert!(
            std::fs::symlink_metadata(dir.path().join(".gh-runner-1-a.yaml.tmp"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
