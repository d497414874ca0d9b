//! Temporary files for the auth unit tests: tokens files and secret files that the code under test reads
//! from disk, removed when the test ends. (The crate has no `tempfile` dependency, and these tests need
//! nothing more than a unique path.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file under the system temp directory, unique to this process and test, deleted on drop.
pub(crate) struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub(crate) fn with_contents(contents: &[u8]) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("keypool-auth-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let file = TempFile { path: std::env::temp_dir().join(name) };
        file.write(contents);
        file
    }

    /// Replaces the contents (a new file, renamed over the old one, as an editor or config tool would).
    pub(crate) fn write(&self, contents: &[u8]) {
        let staging = self.path.with_extension("new");
        std::fs::write(&staging, contents).expect("write a temp file");
        std::fs::rename(&staging, &self.path).expect("rename a temp file");
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
