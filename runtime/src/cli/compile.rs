//! `nexus compile AGENT…`: compiles agents into this data directory's
//! cache ahead of time, so their first `nexus run` starts at once (a
//! Python agent takes 10–30 s to compile, then about 70 ms to start).

use std::path::Path;
use std::time::Instant;

use super::args::CompileArgs;
use crate::agent::host::{Host, RunLimits};
use crate::ops::run::compile_cache;
use crate::ops::{OpError, OpResult};
use crate::output::shown;
use crate::units;

pub fn run(home: &Path, args: CompileArgs) -> OpResult {
    let memory = match args.memory.as_deref() {
        Some(m) => units::size(m)?,
        None => RunLimits::default().memory,
    };
    // The engine a run with this memory limit uses, so its cache key matches.
    let host = Host::new(&compile_cache(home), false, memory)?;
    for agent in &args.agents {
        let name = agent.display().to_string();
        let bytes = std::fs::read(agent).map_err(|e| OpError::local(shown(&name), e))?;
        if host.is_compiled(&bytes) {
            println!("{}: compiled already", shown(&name));
            continue;
        }
        eprintln!("nexus: compiling {}…", shown(&name));
        let started = Instant::now();
        host.load_bytes(bytes, name.clone())?;
        println!(
            "{}: compiled in {:.1} s",
            shown(&name),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
