//! `nexus run AGENT.wasm --zone Z [--with "OTHER.wasm ARGS"]... [-- ARGS]`:
//! reads the agents' files and runs them through the operations layer,
//! their output on this process's streams.

use std::path::Path;

use super::args::RunArgs;
use crate::agent::host::RunError;
use crate::ops::{AgentSpec, OpError, OpResult, Ops, RunIo, RunSpec};
use crate::units;

/// `--with "AGENT.wasm ARGS..."`: a path and its arguments.
fn companion(spec: &str) -> OpResult<(String, Vec<String>)> {
    let mut words = spec.split_whitespace();
    match words.next() {
        Some(path) => Ok((path.to_owned(), words.map(str::to_owned).collect())),
        None => Err(OpError::Usage(
            "--with needs an agent: --with \"AGENT.wasm [ARGS...]\"".into(),
        )),
    }
}

fn agent(path: &str, args: Vec<String>) -> OpResult<AgentSpec> {
    let code = std::fs::read(Path::new(path)).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(AgentSpec {
        name: path.to_owned(),
        code,
        args,
    })
}

pub async fn run(ops: &dyn Ops, args: RunArgs) -> OpResult<i32> {
    let mut agents = vec![agent(&args.agent.display().to_string(), args.args)?];
    for spec in &args.with {
        let (path, rest) = companion(spec)?;
        agents.push(agent(&path, rest)?);
    }
    let spec = RunSpec {
        zone: args.zone.zone,
        agents,
        env: args.env,
        timeout: args.timeout.as_deref().map(units::duration).transpose()?,
        memory: args
            .memory
            .as_deref()
            .map(units::size)
            .transpose()?
            .map(|m| m as u64),
        fuel: args.fuel,
    };
    // Output to this process's own streams always has a receiver.
    Ok(ops.run(spec, RunIo::Inherit).await?.unwrap_or(0))
}
