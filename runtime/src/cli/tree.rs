//! `nexus fs put -r LOCAL_DIR DEST` and `nexus fs get -r SRC LOCAL_DIR`:
//! whole trees between a host directory and a zone, one file at a time
//! through the operations layer (so embedded and through a node alike).
//!
//! The host side is walked through cap-std: every file and directory is
//! opened relative to the directory handle given on the command line, never
//! by an ambient path, so a symbolic link in the tree (or one swapped in
//! while it is copied) cannot make Nexus read or write outside it. Symbolic
//! links are not copied (Nexus has none yet); each is reported. On the zone
//! side, pipes and mounts of other zones are reported and left alone.

use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::ops::{OpError, OpResult, Ops, Range, TRANSFER_CHUNK};
use crate::output;

/// What a tree copy did.
#[derive(Debug, Default)]
struct Copied {
    files: u64,
    dirs: u64,
    bytes: u64,
    links: u64,
    skipped: u64,
}

impl Copied {
    fn report(&self, what: &str) {
        println!(
            "{what} {} files ({} bytes) in {} directories{}{}",
            self.files,
            self.bytes,
            self.dirs,
            match self.links {
                0 => String::new(),
                n => format!(", {n} symbolic links"),
            },
            match self.skipped {
                0 => String::new(),
                n => format!("; {n} skipped"),
            }
        );
    }
}

fn zone_join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn skip(copied: &mut Copied, path: &str, why: &str) {
    eprintln!("nexus: skipped {}: {why}", output::shown(path));
    copied.skipped += 1;
}

/// Copies the host directory `src` into the zone at `dest`.
pub async fn put_tree(ops: &dyn Ops, zone: &str, src: &str, dest: &str) -> OpResult {
    let local = |e| OpError::local(src, e);
    let root = Dir::open_ambient_dir(src, ambient_authority()).map_err(local)?;
    ops.mkdir(zone, dest, true).await?;
    let mut copied = Copied {
        dirs: 1,
        ..Copied::default()
    };
    // (host directory handle, its path for messages, its zone path)
    let mut stack = vec![(root, src.trim_end_matches('/').to_owned(), dest.to_owned())];
    while let Some((dir, shown, into)) = stack.pop() {
        let mut entries: Vec<_> = dir
            .entries()
            .map_err(|e| OpError::local(&shown, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| OpError::local(&shown, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let here = format!("{shown}/{}", name.to_string_lossy());
            let Some(name) = name.to_str() else {
                skip(&mut copied, &here, "its name is not UTF-8");
                continue;
            };
            let target = zone_join(&into, name);
            let kind = entry.file_type().map_err(|e| OpError::local(&here, e))?;
            if kind.is_dir() {
                let sub = entry.open_dir().map_err(|e| OpError::local(&here, e))?;
                ops.mkdir(zone, &target, true).await?;
                copied.dirs += 1;
                stack.push((sub, here, target));
            } else if kind.is_file() {
                let file = entry.open().map_err(|e| OpError::local(&here, e))?;
                let file = tokio::fs::File::from_std(file.into_std());
                let path = here.clone();
                let bytes = tokio_util::io::ReaderStream::with_capacity(file, TRANSFER_CHUNK)
                    .map(move |r| r.map_err(|e| OpError::local(path.clone(), e)))
                    .boxed();
                copied.bytes += ops.put(zone, &target, bytes).await?;
                copied.files += 1;
            } else if kind.is_symlink() {
                // Copied as a link, never followed; an absolute target
                // names a host path, which means nothing in the zone.
                match dir.read_link(name).map(|t| t.to_str().map(str::to_owned)) {
                    Ok(Some(link_to)) => {
                        ops.symlink(zone, &link_to, &target).await?;
                        copied.links += 1;
                    }
                    Ok(None) => skip(&mut copied, &here, "a link whose target is not UTF-8"),
                    Err(_) => skip(&mut copied, &here, "a link to an absolute host path"),
                }
            } else {
                skip(&mut copied, &here, "not a regular file or directory");
            }
        }
    }
    copied.report("put");
    Ok(())
}

/// Copies the zone directory `src` into the host directory `dest`
/// (created if missing; its parent must exist).
pub async fn get_tree(ops: &dyn Ops, zone: &str, src: &str, dest: &str) -> OpResult {
    let local = |e| OpError::local(dest, e);
    match std::fs::create_dir(dest) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(local(e)),
        _ => {}
    }
    let root = Dir::open_ambient_dir(dest, ambient_authority()).map_err(local)?;
    let mut copied = Copied {
        dirs: 1,
        ..Copied::default()
    };
    let mut stack = vec![(root, dest.trim_end_matches('/').to_owned(), src.to_owned())];
    while let Some((dir, shown, from)) = stack.pop() {
        for entry in ops.list(zone, &from, false).await? {
            let here = format!("{shown}/{}", entry.name);
            let source = zone_join(&from, &entry.name);
            match entry.kind.as_str() {
                "dir" if entry.mount_target.is_none() => {
                    match dir.create_dir(&entry.name) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(OpError::local(&here, e))
                        }
                        _ => {}
                    }
                    let sub = dir
                        .open_dir(&entry.name)
                        .map_err(|e| OpError::local(&here, e))?;
                    copied.dirs += 1;
                    stack.push((sub, here, source));
                }
                "file" => {
                    let file = dir
                        .create(&entry.name)
                        .map_err(|e| OpError::local(&here, e))?;
                    let mut out = tokio::fs::File::from_std(file.into_std());
                    let download = ops.get(zone, &source, Range::default(), false).await?;
                    let mut bytes = download.bytes;
                    while let Some(chunk) = bytes.next().await {
                        let chunk = chunk?;
                        out.write_all(&chunk)
                            .await
                            .map_err(|e| OpError::local(&here, e))?;
                        copied.bytes += chunk.len() as u64;
                    }
                    out.flush().await.map_err(|e| OpError::local(&here, e))?;
                    copied.files += 1;
                }
                _ if entry.mount_target.is_some() => {
                    skip(&mut copied, &source, "a mount of another zone")
                }
                kind => skip(&mut copied, &source, &format!("a {kind}")),
            }
        }
    }
    copied.report("got");
    Ok(())
}

/// Whether `p` names a directory on this host (for `put` without `-r`).
pub fn is_local_dir(p: &str) -> bool {
    p != "-" && Path::new(p).is_dir()
}
