//! Cleaning up after a `nexus` that died during a native run (SIGKILL, a
//! crash, a power loss): before each native run, every run directory whose
//! owner is gone has its zone unmounted and is removed, and every container
//! this data directory started for a run that is no longer live is removed.
//! (While `nexus` lives, a run cleans up after itself; if it is killed,
//! its mount is left answering nothing and its container keeps running,
//! cut off from its zone, until the next native run removes both.)

use std::fs;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use super::container;
use super::mount::{detach, owner_alive, remove_run_dir, runs_dir};

/// The run ids with a live owner.
fn live_runs(home: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(runs_dir(home)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("owner")).is_ok_and(|owner| owner_alive(&owner))
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

/// How long a run directory may lack its owner's mark: it is being made
/// (by another run starting on this node at the same moment).
const BEING_MADE: Duration = Duration::from_secs(60);

/// Whether `dir` has no owner yet but was made just now.
fn being_made(dir: &Path, owner: &str) -> bool {
    let age = fs::metadata(dir).and_then(|m| m.modified()).ok();
    let age = age.and_then(|t| t.elapsed().ok());
    owner.is_empty() && age.is_some_and(|a| a < BEING_MADE)
}

/// Unmounts and removes the run directories whose owner is gone.
pub fn sweep_runs(home: &Path) -> usize {
    let Ok(entries) = fs::read_dir(runs_dir(home)) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        if owner_alive(&owner) || being_made(&dir, &owner) {
            continue;
        }
        // A dead FUSE server's mount answers nothing: detach it.
        detach(&dir.join("zone"));
        remove_run_dir(&dir);
        swept += 1;
    }
    swept
}

/// Removes this data directory's containers of runs no longer live.
pub async fn sweep_containers(docker: &Docker, home: &Path) -> usize {
    let live = live_runs(home);
    let Ok(ours) = container::ours(docker, home).await else {
        return 0;
    };
    let mut swept = 0;
    for (id, run) in ours {
        if !live.contains(&run) {
            container::remove(docker, &id).await;
            swept += 1;
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_whose_owner_died_is_removed_and_a_live_one_kept() {
        let home = tempfile::tempdir().unwrap();
        let runs = runs_dir(home.path());
        for (id, owner) in [
            ("dead", "1 1".to_owned()),
            (
                "live",
                super::super::mount::process_mark(std::process::id()).unwrap(),
            ),
        ] {
            fs::create_dir_all(runs.join(id).join("zone")).unwrap();
            fs::write(runs.join(id).join("owner"), owner).unwrap();
        }
        assert_eq!(sweep_runs(home.path()), 1);
        assert!(!runs.join("dead").exists());
        assert!(runs.join("live/zone").exists());
        assert_eq!(live_runs(home.path()), ["live"]);
    }

    #[test]
    fn a_run_being_made_is_kept_until_it_is_old_without_an_owner() {
        let home = tempfile::tempdir().unwrap();
        let dir = runs_dir(home.path()).join("new");
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(sweep_runs(home.path()), 0);
        assert!(dir.exists());
        let long_ago = std::time::SystemTime::now() - 2 * BEING_MADE;
        fs::File::open(&dir)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(sweep_runs(home.path()), 1);
        assert!(!dir.exists());
    }
}
