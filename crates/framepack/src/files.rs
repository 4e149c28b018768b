//! Where model files are read from: the file system, or files held in memory under virtual
//! paths (a bundle compiled into the binary), so an embedded model loads without writing it to
//! disk first.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::WeightsError;
use crate::weights::WeightFiles;

/// The file system, or a set of in-memory files; every bundle and encoder loader reads through
/// one.
#[derive(Clone, Default)]
pub enum FileStore {
    /// Paths are read from the file system; weights are memory-mapped.
    #[default]
    Disk,
    /// Paths name in-memory files; weights are read from the bytes in place.
    Memory(Arc<BTreeMap<PathBuf, &'static [u8]>>),
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disk => f.write_str("Disk"),
            Self::Memory(files) => write!(f, "Memory({} files)", files.len()),
        }
    }
}

impl PartialEq for FileStore {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Disk, Self::Disk) => true,
            (Self::Memory(a), Self::Memory(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Eq for FileStore {}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} is not among the embedded files", path.display()))
}

impl FileStore {
    /// In-memory files at `root.join(relative path)`.
    pub fn memory(root: &Path, files: &[(&str, &'static [u8])]) -> Self {
        Self::Memory(Arc::new(files.iter().map(|(rel, bytes)| (root.join(rel), *bytes)).collect()))
    }

    /// Whether `path` is a file.
    pub fn is_file(&self, path: &Path) -> bool {
        match self {
            Self::Disk => path.is_file(),
            Self::Memory(files) => files.contains_key(path),
        }
    }

    /// Whether `path` is a folder (for in-memory files: a proper prefix of some file's path).
    pub fn is_dir(&self, path: &Path) -> bool {
        match self {
            Self::Disk => path.is_dir(),
            Self::Memory(files) => files.keys().any(|p| p != path && p.starts_with(path)),
        }
    }

    /// Whether `path` is a file or a folder.
    pub fn exists(&self, path: &Path) -> bool {
        self.is_file(path) || self.is_dir(path)
    }

    /// The bytes of a file, borrowed when they are in memory.
    pub fn read(&self, path: &Path) -> io::Result<Cow<'static, [u8]>> {
        match self {
            Self::Disk => std::fs::read(path).map(Cow::Owned),
            Self::Memory(files) => files.get(path).map(|b| Cow::Borrowed(*b)).ok_or_else(|| not_found(path)),
        }
    }

    /// A UTF-8 text file.
    pub fn read_to_string(&self, path: &Path) -> io::Result<String> {
        match self {
            Self::Disk => std::fs::read_to_string(path),
            Self::Memory(_) => String::from_utf8(self.read(path)?.into_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// The size of a file in bytes, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        match self {
            Self::Disk => std::fs::metadata(path).ok().map(|m| m.len()),
            Self::Memory(files) => files.get(path).map(|b| b.len() as u64),
        }
    }

    /// The files directly inside `dir`, sorted.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = match self {
            Self::Disk => {
                std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect()
            }
            Self::Memory(files) => {
                if !self.is_dir(dir) {
                    return Err(not_found(dir));
                }
                files.keys().filter(|p| p.parent() == Some(dir)).cloned().collect()
            }
        };
        out.sort();
        Ok(out)
    }

    /// The safetensors files at `paths`, mapped from disk or read from memory in place.
    pub fn weights(&self, paths: &[PathBuf]) -> Result<WeightFiles, WeightsError> {
        match self {
            Self::Disk => WeightFiles::open(paths),
            Self::Memory(files) => {
                let found = paths
                    .iter()
                    .map(|p| match files.get(p) {
                        Some(bytes) => Ok((p.clone(), *bytes)),
                        None => Err(WeightsError::Io { path: p.clone(), source: not_found(p) }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                WeightFiles::from_static(&found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_answers_like_a_folder_tree() {
        let store = FileStore::memory(Path::new("embedded"), &[("a/x.json", b"{}"), ("a/b/y.bin", b"12"), ("z", b"")]);
        let root = Path::new("embedded");
        assert!(store.is_dir(root) && store.is_dir(&root.join("a")) && store.is_dir(&root.join("a/b")));
        assert!(!store.is_dir(&root.join("a/x.json")) && store.is_file(&root.join("a/x.json")));
        assert!(!store.exists(&root.join("q")));
        assert_eq!(store.list(&root.join("a")).unwrap(), vec![root.join("a/x.json")]);
        assert_eq!(store.read_to_string(&root.join("a/x.json")).unwrap(), "{}");
        assert_eq!(store.file_len(&root.join("a/b/y.bin")), Some(2));
        let e = store.read(&root.join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
