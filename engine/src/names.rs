//! File names from the wire are untrusted: this module decides which are safe
//! and creates output files without ever leaving the output folder.
//!
//! A safe name is a non-empty, `/`-separated relative path whose components
//! are ordinary names: no leading `/`, no `.` or `..`, no empty component, no
//! NUL or backslash, at most [`crate::wire::MAX_NAME_LEN`] bytes.
//!
//! [`OutputDir::create_part`] then creates the parent folders one component at
//! a time, refusing any component that already exists as a symbolic link (or
//! as anything but a directory), and opens `NAME.part` with `O_NOFOLLOW`, so a
//! symlink planted in the output folder cannot redirect a write outside it.
//! (A local user racing us inside the output folder between check and create
//! is out of scope: the output folder must not be writable by untrusted
//! users.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("empty file name")]
    Empty,
    /// Absolute path.
    #[error("absolute file name {0:?}")]
    Absolute(String),
    /// `.` or `..` or an empty component.
    #[error("file name {0:?} has a '.', '..' or empty component")]
    Traversal(String),
    /// NUL, backslash or over-long.
    #[error("file name {0:?} has a forbidden character or is too long")]
    Forbidden(String),
}

/// Checks that `name` is a safe relative name (see the module docs).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute(name.to_owned()));
    }
    if name.len() > crate::wire::MAX_NAME_LEN || name.contains(['\0', '\\']) {
        return Err(NameError::Forbidden(name.to_owned()));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(NameError::Traversal(name.to_owned()));
    }
    Ok(())
}

/// Errors creating an output file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The name failed [`check_name`].
    #[error("unsafe file name: {0}")]
    Unsafe(#[from] NameError),
    /// A component of the name is a symlink or a non-directory.
    #[error("refusing {name:?}: {component} is a symbolic link or not a directory")]
    Escapes {
        /// The full name.
        name: String,
        /// The offending path inside the output folder.
        component: String,
    },
    /// The OS refused.
    #[error("cannot create {path}: {source}")]
    Io {
        /// What we tried to create.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The receiver's output folder.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
}

impl OutputDir {
    /// Opens (creating if needed) the output folder and proves it writable by
    /// creating and removing a probe file.
    pub fn open(root: &Path) -> Result<Self, OutputError> {
        let io_err = |source| OutputError::Io {
            path: root.to_owned(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io_err)?;
        let probe = root.join(format!(".chunkstream-probe-{}", std::process::id()));
        File::create(&probe).map_err(io_err)?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Final path of a (checked) name.
    pub fn final_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Path of the partial file for a (checked) name.
    pub fn part_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.part"))
    }

    /// Path of the block journal of a (checked) name's partial file
    /// ([`crate::journal`]).
    pub fn journal_path(&self, name: &str) -> PathBuf {
        self.root
            .join(format!("{name}.part{}", crate::journal::SUFFIX))
    }

    /// Creates (truncating) the journal beside `NAME.part`, which
    /// [`Self::create_part`] made, and writes its header; the file returned
    /// appends (`O_APPEND`: a record is never written over another, even
    /// by a session of an earlier attempt still winding down). Not through
    /// a symbolic link.
    pub fn create_journal(
        &self,
        header: &crate::journal::JournalHeader,
    ) -> Result<File, OutputError> {
        use std::io::Write;
        let path = self.journal_path(&header.name);
        let io_err = |source| OutputError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => OutputError::Escapes {
                    name: header.name.clone(),
                    component: format!("{}.part{}", header.name, crate::journal::SUFFIX),
                },
                _ => io_err(source),
            })?;
        file.write_all(&header.encode()).map_err(io_err)?;
        drop(file);
        OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err)
    }

    /// Removes the journal of `name` once its file is in place, if it is
    /// ours for this file (a file the sender named like a journal is left
    /// alone).
    pub fn remove_journal(&self, name: &str, size: u64, block_size_log2: u8) {
        let path = self.journal_path(name);
        let ours = std::fs::read(&path).ok().is_some_and(|b| {
            crate::journal::parse(&b).is_ok_and(|p| p.header.matches(name, size, block_size_log2))
        });
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Creates parent folders safely and opens `NAME.part` for writing,
    /// truncated to `size` bytes.
    pub fn create_part(&self, name: &str, size: u64) -> Result<File, OutputError> {
        check_name(name)?;
        let components: Vec<&str> = name.split('/').collect();
        let mut dir = self.root.clone();
        for (i, comp) in components[..components.len() - 1].iter().enumerate() {
            dir.push(comp);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(OutputError::Escapes {
                        name: name.to_owned(),
                        component: components[..=i].join("/"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir)
                        .or_else(|e| {
                            // Another file of this session may have created it.
                            if e.kind() == io::ErrorKind::AlreadyExists {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|source| OutputError::Io {
                            path: dir.clone(),
                            source,
                        })?;
                }
                Err(source) => {
                    return Err(OutputError::Io {
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
        // The final name must not be a symlink or directory either: the
        // rename at the end would replace a symlink, not follow it, but a
        // directory cannot be replaced.
        let final_path = self.final_path(name);
        if let Ok(m) = std::fs::symlink_metadata(&final_path)
            && m.file_type().is_dir()
        {
            return Err(OutputError::Escapes {
                name: name.to_owned(),
                component: name.to_owned(),
            });
        }
        let part = self.part_path(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => OutputError::Escapes {
                    name: name.to_owned(),
                    component: format!("{name}.part"),
                },
                _ => OutputError::Io {
                    path: part.clone(),
                    source,
                },
            })?;
        file.set_len(size).map_err(|source| OutputError::Io {
            path: part.clone(),
            source,
        })?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
            "a/",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"a".repeat(5000)).is_err());
        for good in ["a", "a/b/c.txt", "..a", "a..", ".hidden", "名前/ファイル"] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn symlinks_inside_the_output_folder_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let out = OutputDir::open(&tmp.path().join("out")).unwrap();
        std::os::unix::fs::symlink(&outside, out.root().join("link")).unwrap();
        let err = out.create_part("link/file", 1).unwrap_err();
        assert!(
            matches!(err, OutputError::Escapes { ref component, .. } if component == "link"),
            "{err}"
        );
        // A symlink where NAME.part goes is not followed either.
        std::os::unix::fs::symlink(outside.join("victim"), out.root().join("x.part")).unwrap();
        let err = out.create_part("x", 1).unwrap_err();
        assert!(matches!(err, OutputError::Escapes { .. }), "{err}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn nested_parts_are_created_with_their_size() {
        let tmp = tempfile::tempdir().unwrap();
        let out = OutputDir::open(tmp.path()).unwrap();
        out.create_part("a/b/c", 4096).unwrap();
        assert_eq!(
            std::fs::metadata(tmp.path().join("a/b/c.part"))
                .unwrap()
                .len(),
            4096
        );
    }

    #[test]
    fn an_output_folder_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = OutputDir::open(&file).unwrap_err().to_string();
        assert!(err.contains("cannot create") && err.contains("/f"), "{err}");
    }
}
