//! Whole-file and whole-tree operations composed from the VFS, so every
//! front-end (the embedded CLI, a node's API) has the same policy: a file
//! is replaced atomically through a hidden sibling, and a tree is removed
//! deepest entries first.

use crate::access::identity::Task;
use crate::error::{KernelError, Result};
use crate::files::vfs::{Handle, OpenOptions};
use crate::kernel::Kernel;
use crate::types::FileKind;

/// A file being written beside its destination: a reader of the
/// destination sees the old content until [`Replacement::commit`] renames
/// the new file over it, never a mix. [`Replacement::abort`] removes the
/// new file and leaves the destination as it was.
pub struct Replacement<'k> {
    kernel: &'k Kernel,
    task: Task,
    tmp: String,
    dest: String,
    handle: Handle,
    written: u64,
}

impl Replacement<'_> {
    /// Appends `data` to the new file.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.kernel
            .write(&self.task, &self.handle, self.written, data)
            .await?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the new file durable and renames it over the destination,
    /// durably; on failure the new file is removed.
    pub async fn commit(self) -> Result<u64> {
        let durable = self.kernel.sync(&self.task, &self.handle).await;
        let renamed = match durable {
            Ok(()) => self.kernel.rename(&self.task, &self.tmp, &self.dest).await,
            Err(e) => Err(e),
        };
        let renamed = match renamed {
            Ok(()) => self.kernel.make_durable().await,
            Err(e) => Err(e),
        };
        match renamed {
            Ok(()) => Ok(self.written),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Removes the new file (best effort: a leftover is a hidden file that
    /// `nexus fs rm` removes).
    pub async fn abort(self) {
        if let Err(e) = self.kernel.unlink(&self.task, &self.tmp).await {
            tracing::warn!("could not remove {}: {e}", self.tmp);
        }
    }
}

impl Kernel {
    /// Starts replacing (or creating) the file at `dest`; needs `write` on
    /// its directory (and, at commit, on a file it replaces).
    pub async fn begin_replace(&self, task: &Task, dest: &str) -> Result<Replacement<'_>> {
        let (parent, name) = crate::files::path::split_parent(dest)?;
        let tmp = format!(
            "{}/.{name}.nexus-put-{:016x}",
            parent.trim_end_matches('/'),
            rand::random::<u64>()
        );
        let handle = self.open_path(task, &tmp, OpenOptions::CREATE_NEW).await?;
        Ok(Replacement {
            kernel: self,
            task: task.clone(),
            tmp,
            dest: dest.to_owned(),
            handle,
            written: 0,
        })
    }

    /// Removes a file, a mount entry, a pipe or an empty directory; with
    /// `recursive`, a directory and everything below it.
    pub async fn remove_path(&self, task: &Task, path: &str, recursive: bool) -> Result<()> {
        match self.lstat(task, path)?.kind {
            FileKind::Dir if recursive => self.remove_tree(task, path).await,
            FileKind::Dir => self.rmdir(task, path).await,
            _ => self.unlink(task, path).await,
        }
    }

    /// Removes a pipe, and only a pipe.
    pub async fn remove_pipe(&self, task: &Task, path: &str) -> Result<()> {
        if self.lstat(task, path)?.kind != FileKind::Pipe {
            return Err(KernelError::Invalid(format!(
                "{path} is not a pipe (use `nexus fs rm`)"
            )));
        }
        self.unlink(task, path).await
    }

    /// Removes a directory tree, deepest entries first.
    async fn remove_tree(&self, task: &Task, path: &str) -> Result<()> {
        let mut stack = vec![(path.to_owned(), false)];
        while let Some((dir, expanded)) = stack.pop() {
            if expanded {
                self.rmdir(task, &dir).await?;
                continue;
            }
            stack.push((dir.clone(), true));
            // Each round removes what it lists, so the first page is always fresh.
            loop {
                let page = self.readdir(task, &dir, None, 1024)?;
                let mut subdirs = 0;
                for e in &page.entries {
                    let child = format!("{}/{}", dir.trim_end_matches('/'), e.name);
                    if e.kind == FileKind::Dir {
                        stack.push((child, false));
                        subdirs += 1;
                    } else {
                        self.unlink(task, &child).await?;
                    }
                }
                if page.next.is_none() || subdirs > 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}
