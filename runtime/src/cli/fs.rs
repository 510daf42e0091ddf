//! `nexus fs …` and `nexus mount`: arguments in, the operation, output out.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use nexus_kernel::Stat;
use tokio::io::AsyncWriteExt;

use super::args::FsCmd;
use super::tree;
use crate::ops::{ByteStream, Entry, OpError, OpResult, Ops, Range, TRANSFER_CHUNK};
use crate::output;

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

pub async fn run(ops: &dyn Ops, cmd: FsCmd) -> OpResult {
    match cmd {
        FsCmd::Put {
            zone,
            recursive: true,
            src,
            dest,
        } => tree::put_tree(ops, &zone.zone, &src, &dest).await,
        FsCmd::Put { src, .. } if tree::is_local_dir(&src) => Err(OpError::Usage(format!(
            "{src} is a directory: copy it with `nexus fs put -r`"
        ))),
        FsCmd::Put {
            zone, src, dest, ..
        } => put(ops, &zone.zone, &src, &dest).await,
        FsCmd::Get {
            zone,
            recursive: true,
            src,
            dest,
            ..
        } => tree::get_tree(ops, &zone.zone, &src, &dest).await,
        FsCmd::Get {
            zone,
            src,
            dest,
            offset,
            length,
            read,
            ..
        } => {
            let range = Range { offset, length };
            get(ops, &zone.zone, &src, &dest, range, read.linearizable).await
        }
        FsCmd::Cat { zone, path, read } => {
            let all = Range::default();
            get(ops, &zone.zone, &path, "-", all, read.linearizable).await
        }
        FsCmd::Ls {
            zone,
            path,
            json,
            read,
        } => print_ls(ops.list(&zone.zone, &path, read.linearizable).await?, json),
        FsCmd::Stat {
            zone,
            path,
            json,
            read,
        } => print_stat(
            &path,
            &ops.stat(&zone.zone, &path, read.linearizable).await?,
            json,
        ),
        FsCmd::Mkdir {
            zone,
            parents,
            path,
        } => ops.mkdir(&zone.zone, &path, parents).await,
        FsCmd::Rm {
            zone,
            recursive,
            path,
        } => ops.remove(&zone.zone, &path, recursive).await,
        FsCmd::Mv { zone, from, to } => ops.rename(&zone.zone, &from, &to).await,
        FsCmd::Ln {
            zone,
            symbolic: true,
            target,
            link,
        } => ops.symlink(&zone.zone, &target, &link).await,
        FsCmd::Ln {
            zone, target, link, ..
        } => ops.link(&zone.zone, &target, &link).await,
        FsCmd::Readlink { zone, path } => {
            println!("{}", output::shown(&ops.readlink(&zone.zone, &path).await?));
            Ok(())
        }
    }
}

pub async fn mount(ops: &dyn Ops, zone: &str, path: &str, target: &str) -> OpResult {
    let ino = ops.mount(zone, path, target).await?;
    println!("mounted zone {target} at {path} (inode {ino})");
    Ok(())
}

fn print_stat(path: &str, s: &Stat, json: bool) -> OpResult {
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

fn print_ls(rows: Vec<Entry>, json: bool) -> OpResult {
    if json {
        return output::json(&rows);
    }
    for r in rows {
        let shown = output::shown(&r.name);
        let name = match &r.mount_target {
            Some(t) => format!("{shown} -> zone {t}"),
            None if r.kind == "dir" => format!("{shown}/"),
            None => shown.into_owned(),
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

/// `SRC` (or stdin for `-`) as a stream of chunks; a read error ends it
/// with that error.
async fn source(src: &str) -> OpResult<(ByteStream, Option<u64>)> {
    let named = |e| OpError::local(src, e);
    if src == "-" {
        let stdin = tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), TRANSFER_CHUNK);
        return Ok((
            stdin
                .map(|r| r.map_err(|e| OpError::local("stdin", e)))
                .boxed(),
            None,
        ));
    }
    let file = tokio::fs::File::open(src).await.map_err(named)?;
    let size = file.metadata().await.ok().map(|m| m.len());
    let path = src.to_owned();
    let bytes = tokio_util::io::ReaderStream::with_capacity(file, TRANSFER_CHUNK)
        .map(move |r| r.map_err(|e| OpError::local(path.clone(), e)));
    Ok((bytes.boxed(), size))
}

/// `fs put`: the zone's file is replaced atomically (readers see the old
/// content or the whole new one).
async fn put(ops: &dyn Ops, zone: &str, src: &str, dest: &str) -> OpResult {
    let (bytes, size) = source(src).await?;
    let bar = progress(size, "put");
    let counting = bar.clone();
    let bytes = bytes
        .inspect(move |b| {
            if let Ok(b) = b {
                counting.inc(b.len() as u64);
            }
        })
        .boxed();
    let put = ops.put(zone, dest, bytes).await;
    bar.finish_and_clear();
    put.map(|_| ())
}

/// `fs get` and `fs cat`: the file's bytes (or a range) to `dest` or stdout.
async fn get(
    ops: &dyn Ops,
    zone: &str,
    src: &str,
    dest: &str,
    range: Range,
    linearizable: bool,
) -> OpResult {
    let download = ops.get(zone, src, range, linearizable).await?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if dest == "-" {
        Box::new(tokio::io::stdout())
    } else {
        let f = tokio::fs::File::create(dest)
            .await
            .map_err(|e| OpError::local(dest, e))?;
        Box::new(f)
    };
    let bar = progress(Some(download.total), "get");
    let mut bytes = download.bytes;
    let copied: OpResult = async {
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            out.write_all(&chunk)
                .await
                .map_err(|e| OpError::local(dest, e))?;
            bar.inc(chunk.len() as u64);
        }
        out.flush().await.map_err(|e| OpError::local(dest, e))
    }
    .await;
    bar.finish_and_clear();
    copied
}
