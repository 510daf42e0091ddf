//! `nexus fs …` and `nexus mount`.

use std::io::{Read, Write};

use indicatif::{ProgressBar, ProgressStyle};
use nexus_kernel::content::CHUNK_SIZE;
use nexus_kernel::identity::Task;
use nexus_kernel::kernel::Kernel;
use nexus_kernel::types::{FileKind, Stat, ZoneId};
use nexus_kernel::vfs::{Handle, OpenOptions};
use nexus_kernel::KernelError;
use serde::Serialize;

use crate::cli::{FsCmd, ReadArg, ZoneArg};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::session::Acting;

/// Transfers at least this large get a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 8 << 20;

fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    match total {
        Some(n) if n >= PROGRESS_FROM => {
            let bar = ProgressBar::new(n);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

#[derive(Serialize, serde::Deserialize)]
pub struct LsRow {
    name: String,
    kind: String,
    ino: u64,
    size: u64,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount_target: Option<String>,
}

pub async fn run(k: &Kernel, acting: &Acting, cmd: FsCmd) -> CliResult {
    let zone = |z: &ZoneArg| acting.task(k, &z.zone);
    // A task for a read (embedded reads are linearizable anyway: the
    // replica is the whole group, so this returns at once).
    let reader = |z: ZoneArg, read: ReadArg| async move {
        let t = acting.task(k, &z.zone)?;
        if read.linearizable {
            k.linearize(&t).await?;
        }
        Ok::<_, CliError>(t)
    };
    match cmd {
        FsCmd::Put { zone: z, src, dest } => put(k, &zone(&z)?, &src, &dest).await,
        FsCmd::Get { zone: z, src, dest } => get(k, &zone(&z)?, &src, &dest).await,
        FsCmd::Cat {
            zone: z,
            path,
            read,
        } => get(k, &reader(z, read).await?, &path, "-").await,
        FsCmd::Ls {
            zone: z,
            path,
            json,
            read,
        } => print_ls(ls_rows(k, &reader(z, read).await?, &path)?, json),
        FsCmd::Stat {
            zone: z,
            path,
            json,
            read,
        } => print_stat(&path, &k.lstat(&reader(z, read).await?, &path)?, json),
        FsCmd::Mkdir {
            zone: z,
            parents,
            path,
        } => {
            let z = zone(&z)?;
            if parents {
                k.mkdir_all(&z, &path).await?;
            } else {
                k.mkdir(&z, &path).await?;
            }
            Ok(())
        }
        FsCmd::Rm {
            zone: z,
            recursive,
            path,
        } => remove(k, &zone(&z)?, &path, recursive).await,
        FsCmd::Mv { zone: z, from, to } => Ok(k.rename(&zone(&z)?, &from, &to).await?),
    }
}

/// `fs rm [-r]`: a file, an empty directory, or (`recursive`) a tree.
pub async fn remove(k: &Kernel, task: &Task, path: &str, recursive: bool) -> CliResult {
    match k.lstat(task, path)?.kind {
        FileKind::Dir if recursive => remove_tree(k, task, path).await,
        FileKind::Dir => Ok(k.rmdir(task, path).await?),
        _ => Ok(k.unlink(task, path).await?),
    }
}

pub async fn mount(
    k: &Kernel,
    acting: &Acting,
    z: &ZoneArg,
    path: &str,
    target: &str,
) -> CliResult {
    let h = k
        .mount(&acting.task(k, &z.zone)?, path, &ZoneId::new(target)?)
        .await?;
    println!("mounted zone {target} at {path} (inode {})", h.ino);
    Ok(())
}

/// `fs stat`, here and in client mode.
pub fn print_stat(path: &str, s: &Stat, json: bool) -> CliResult {
    if json {
        return output::json(s);
    }
    println!("path:    {path}");
    println!("zone:    {}", s.zone);
    println!("inode:   {}", s.ino);
    println!("type:    {}", s.kind.as_str());
    println!("size:    {}", s.size);
    println!("version: {}", s.version);
    println!("mtime:   {}", output::time(s.mtime));
    println!("atime:   {}", output::time(s.atime));
    println!("ctime:   {}", output::time(s.ctime));
    if let Some(t) = &s.mount_target {
        println!("mounts:  zone {t}");
    }
    if let Some(c) = s.pipe_capacity {
        println!("capacity: {c}");
    }
    Ok(())
}

/// `fs ls`'s rows: every entry of the directory, with its size and mtime.
pub fn ls_rows(k: &Kernel, z: &Task, path: &str) -> CliResult<Vec<LsRow>> {
    let dir = k.resolve(z, path, true)?;
    if dir.kind != FileKind::Dir {
        return Err(KernelError::NotDirectory(path.to_owned()).into());
    }
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = k.readdir_handle(z, &dir, cursor.as_deref(), 1024)?;
        for e in page.entries {
            let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
            let s = k.lstat(z, &child)?;
            rows.push(LsRow {
                name: e.name,
                kind: e.kind.as_str().to_owned(),
                ino: e.ino,
                size: s.size,
                mtime: s.mtime,
                mount_target: s.mount_target.map(|t| t.to_string()),
            });
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    Ok(rows)
}

/// `fs ls`, here and in client mode.
pub fn print_ls(rows: Vec<LsRow>, json: bool) -> CliResult {
    if json {
        return output::json(&rows);
    }
    for r in rows {
        let name = match &r.mount_target {
            Some(t) => format!("{} -> zone {t}", r.name),
            None if r.kind == "dir" => format!("{}/", r.name),
            None => r.name,
        };
        println!(
            "{:<5} {:>12} {}  {}",
            r.kind,
            r.size,
            output::time(r.mtime),
            name
        );
    }
    Ok(())
}

/// Writes to a temporary sibling, then renames over `dest`: readers see the
/// old file or the whole new one, never a partial upload.
async fn put(k: &Kernel, z: &Task, src: &str, dest: &str) -> CliResult {
    let mut input: Box<dyn Read> = if src == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(src).map_err(|e| CliError::local(src, e))?)
    };
    let total = if src == "-" {
        None
    } else {
        std::fs::metadata(src).ok().map(|m| m.len())
    };
    replace(k, z, &mut input, src, dest, &progress(total, "put")).await
}

/// Writes `input` to a temporary file beside `dest`, then renames it over
/// `dest`: a reader sees the old content or the new, never a mix, and a
/// failed copy leaves `dest` as it was. (`fs put`, here and through a node.)
pub async fn replace<R: Read + ?Sized>(
    k: &Kernel,
    z: &Task,
    input: &mut R,
    src: &str,
    dest: &str,
    bar: &ProgressBar,
) -> CliResult {
    let (parent, name) = nexus_kernel::path::split_parent(dest)?;
    let tmp = format!(
        "{}/.{name}.nexus-put-{:016x}",
        parent.trim_end_matches('/'),
        rand::random::<u64>()
    );
    let h = k.open_path(z, &tmp, OpenOptions::CREATE_NEW).await?;
    let copied = copy_in(k, z, &h, input, src, bar).await;
    bar.finish_and_clear();
    if let Err(e) = copied {
        let _ = k.unlink(z, &tmp).await;
        return Err(e);
    }
    if let Err(e) = k.rename(z, &tmp, dest).await {
        let _ = k.unlink(z, &tmp).await;
        return Err(e.into());
    }
    Ok(())
}

async fn copy_in<R: Read + ?Sized>(
    k: &Kernel,
    z: &Task,
    h: &Handle,
    input: &mut R,
    src: &str,
    bar: &ProgressBar,
) -> CliResult {
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut offset = 0u64;
    loop {
        // Fill whole chunks so each write replaces exactly one chunk.
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CliError::local(src, e)),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        k.write(z, h, offset, &buf[..filled]).await?;
        offset += filled as u64;
        bar.set_position(offset);
    }
}

async fn get(k: &Kernel, z: &Task, src: &str, dest: &str) -> CliResult {
    let h = k.resolve(z, src, true)?;
    let size = k.stat_handle(z, &h)?.size;
    let mut out: Box<dyn Write> = if dest == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(dest).map_err(|e| CliError::local(dest, e))?)
    };
    let bar = progress(Some(size), "get");
    let mut offset = 0;
    loop {
        let bytes = k.read(z, &h, offset, CHUNK_SIZE).await?;
        if bytes.is_empty() {
            break;
        }
        out.write_all(&bytes)
            .map_err(|e| CliError::local(dest, e))?;
        offset += bytes.len() as u64;
        bar.set_position(offset);
    }
    bar.finish_and_clear();
    out.flush().map_err(|e| CliError::local(dest, e))
}

/// Removes a directory tree, deepest entries first.
async fn remove_tree(k: &Kernel, z: &Task, path: &str) -> CliResult {
    let mut stack = vec![(path.to_owned(), false)];
    while let Some((dir, expanded)) = stack.pop() {
        if expanded {
            k.rmdir(z, &dir).await?;
            continue;
        }
        stack.push((dir.clone(), true));
        // Each round removes what it lists, so the first page is always fresh.
        loop {
            let page = k.readdir(z, &dir, None, 1024)?;
            let mut subdirs = 0;
            for e in &page.entries {
                let child = format!("{}/{}", dir.trim_end_matches('/'), e.name);
                if e.kind == FileKind::Dir {
                    stack.push((child, false));
                    subdirs += 1;
                } else {
                    k.unlink(z, &child).await?;
                }
            }
            if page.next.is_none() || subdirs > 0 {
                break;
            }
        }
    }
    Ok(())
}
