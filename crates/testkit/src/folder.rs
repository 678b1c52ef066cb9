//! Where a cluster or server keeps its files: a temporary folder removed on
//! drop, or a kept folder reused on the next start, with a small JSON state
//! file (mode 0600) that tells the two apart.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::IoContext;
use crate::{Error, Result};

pub(crate) enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    /// `dir`, or a new temporary folder named `prefix…`. The flag tells
    /// whether `dir` already holds `state_file` from an earlier run.
    pub(crate) fn open(dir: Option<&Path>, prefix: &str, state_file: &str) -> Result<(Root, bool)> {
        Ok(match dir {
            Some(dir) => (Root::Kept(dir.to_owned()), dir.join(state_file).is_file()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .context(|| "creating a temporary folder".into())?;
                (Root::Temp(temp), false)
            }
        })
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Root::Temp(temp) => temp.path(),
            Root::Kept(path) => path,
        }
    }

    /// Reads the JSON state file `name`.
    pub(crate) fn load<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path().join(name);
        let text =
            std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{} is damaged: {e}", path.display())))
    }

    /// Writes the JSON state file `name` (mode 0600).
    pub(crate) fn save<T: Serialize>(&self, name: &str, state: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::Usage(e.to_string()))?;
        crate::write_private(&self.path().join(name), &text)
    }
}
