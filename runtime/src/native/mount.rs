//! A native run's place on the host: `<home>/native/<run id>/`, holding
//! `owner` (the pid and start time of the `nexus` that made it) and `zone`,
//! where the task's zone is mounted through FUSE while the run lasts.
//! Dropping a [`RunDir`] unmounts the zone and removes the directory; a run
//! whose `nexus` died is found and cleaned by the next one (`sweep.rs`).
//! `<home>/native` is private to the data directory's owner: nobody else on
//! the host reaches a mounted zone by its path.

use std::fs;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nexus_kernel::{Kernel, Task};

use super::fuse::{Owner, Watcher, ZoneFs};
use super::NativeError;
use crate::agent::pipe::PipeBudget;

/// FUSE threads serving one mount (each answers at once, the work runs
/// on the tokio runtime; more threads only overlap the reads of requests).
const FUSE_THREADS: usize = 2;

/// Where native runs live.
pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("native")
}

/// This process, as `owner` records it: pid and start time (a pid alone
/// is reused).
pub fn process_mark(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The start time is field 22; fields after the command (in
    // parentheses, which may hold spaces) start at the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Whether the process `owner` names is still that process.
pub fn owner_alive(owner: &str) -> bool {
    let Some(pid) = owner.split_whitespace().next().and_then(|p| p.parse().ok()) else {
        return false;
    };
    process_mark(pid).as_deref() == Some(owner.trim())
}

/// Who may reach the mount: the container's user (through Docker's bind
/// mount) or only this host user (level 0).
#[derive(Debug, Clone, Copy)]
pub enum Reach {
    OtherUsers,
    Owner,
}

/// A run's directory with the zone mounted in it.
pub struct RunDir {
    dir: PathBuf,
    zone: PathBuf,
    session: Option<BackgroundSession>,
    /// Keeps the mount's caches true while it lives (`fuse/watch.rs`).
    watcher: Option<Watcher>,
}

impl RunDir {
    /// Makes the run's directory through cap-std, relative to the data
    /// directory: a symbolic link planted at `native` or below cannot
    /// send it (or the mount) elsewhere.
    pub fn create(home: &Path, run_id: &str) -> Result<Self, NativeError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| NativeError::Io { path, source }
        };
        let runs = runs_dir(home);
        let dir = runs.join(run_id);
        let private = |mode| {
            let mut b = DirBuilder::new();
            b.mode(mode);
            b
        };
        let home_dir = Dir::open_ambient_dir(home, ambient_authority()).map_err(io(home))?;
        match home_dir.create_dir_with("native", &private(0o700)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(&runs)(e)),
            _ => {}
        }
        let runs_handle = home_dir.open_dir("native").map_err(io(&runs))?;
        runs_handle
            .create_dir_with(run_id, &private(0o700))
            .map_err(io(&dir))?;
        let run = runs_handle.open_dir(run_id).map_err(io(&dir))?;
        let owner = process_mark(std::process::id()).unwrap_or_default();
        run.write("owner", owner).map_err(io(&dir))?;
        let zone = dir.join("zone");
        run.create_dir_with("zone", &private(0o755))
            .map_err(io(&zone))?;
        Ok(RunDir {
            dir,
            zone,
            session: None,
            watcher: None,
        })
    }

    /// Mounts `task`'s zone here, served by `kernel` as that task.
    pub fn mount(
        &mut self,
        kernel: Arc<Kernel>,
        task: Task,
        owner: Owner,
        reach: Reach,
        pipes: Arc<PipeBudget>,
    ) -> Result<(), NativeError> {
        let fsname = format!("nexus:{}", task.zone());
        let rt = tokio::runtime::Handle::current();
        let (fs, watching) = ZoneFs::new(kernel, task, rt, owner, pipes);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(fsname),
            MountOption::Subtype("nexus".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        config.acl = match reach {
            Reach::OtherUsers => SessionACL::All,
            Reach::Owner => SessionACL::RootAndOwner,
        };
        config.n_threads = Some(FUSE_THREADS);
        let mount_error = |source| NativeError::Mount {
            path: self.zone.display().to_string(),
            source,
        };
        let session = fuser::spawn_mount(fs, &self.zone, &config).map_err(mount_error)?;
        let watcher = watching.start(session.notifier());
        self.session = Some(session);
        self.watcher = Some(watcher.map_err(mount_error)?);
        Ok(())
    }

    /// Where the zone is mounted.
    pub fn zone(&self) -> &Path {
        &self.zone
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.watcher = None;
        if let Some(session) = self.session.take() {
            // Detached first, so a process still holding the mount (a
            // level-0 agent's leftover child) cannot make this wait: the
            // session ends when its last user does.
            detach(&self.zone);
            let (done, ended) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = done.send(session.umount_and_join());
            });
            match ended.recv_timeout(SESSION_END) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("ending the FUSE session: {e}"),
                Err(_) => tracing::warn!(
                    "{} is still in use; its FUSE session ends with its last user",
                    self.zone.display()
                ),
            }
        }
        remove_run_dir(&self.dir);
    }
}

/// How long a run waits for its FUSE session to end once unmounted.
const SESSION_END: std::time::Duration = std::time::Duration::from_secs(5);

/// Unmounts `zone` lazily: by the syscall as root, else through
/// fusermount3 (as FUSE's unprivileged users do).
pub fn detach(zone: &Path) {
    match rustix::mount::unmount(zone, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::PERM => {
            let unmounted = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(zone)
                .status();
            if !unmounted.is_ok_and(|s| s.success()) {
                tracing::warn!("fusermount3 -u -z {} failed", zone.display());
            }
        }
        // Not (or no longer) mounted.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
        Err(e) => tracing::warn!("unmounting {}: {e}", zone.display()),
    }
}

/// Removes a run's directory entry by entry, never recursively: were its
/// zone still mounted, a recursive removal would delete the zone's files.
pub fn remove_run_dir(dir: &Path) {
    let _ = fs::remove_file(dir.join("owner"));
    for path in [dir.join("zone"), dir.to_path_buf()] {
        if let Err(e) = fs::remove_dir(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = process_mark(std::process::id()).unwrap();
        assert!(owner_alive(&me));
        let pid = me.split_whitespace().next().unwrap();
        assert!(!owner_alive(&format!("{pid} 1")));
        assert!(!owner_alive("not a pid"));
        assert!(!owner_alive(""));
    }
}
