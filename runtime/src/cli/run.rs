//! `nexus run AGENT.wasm --zone Z [--with "OTHER.wasm ARGS"]... [-- ARGS]`:
//! reads the agents' files and runs them through the operations layer,
//! their output on this process's streams.

use std::path::Path;

use super::args::RunArgs;
use crate::agent::host::RunError;
use crate::native::{Isolation, NativeError, NativeSpec};
use crate::ops::{AgentSpec, OpError, OpResult, Ops, RunIo, RunSpec};
use crate::units;

/// `--with "AGENT.wasm ARGS..."`: a path and its arguments, split as a
/// shell would (quotes keep words together).
fn companion(spec: &str) -> OpResult<(String, Vec<String>)> {
    let words = shlex::split(spec).ok_or_else(|| {
        OpError::Usage(format!(
            "--with {spec:?}: an unclosed quote or a trailing backslash"
        ))
    })?;
    let mut words = words.into_iter();
    match words.next() {
        Some(path) => Ok((path, words.collect())),
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

/// A native agent's spec, if the arguments ask for one.
fn native(args: &RunArgs) -> OpResult<Option<NativeSpec>> {
    let isolation = match (&args.image, &args.isolation) {
        (Some(image), _) => Isolation::Container {
            image: image.clone(),
            cpus: args.cpus,
        },
        (None, Some(_)) => Isolation::Host,
        (None, None) => return Ok(None),
    };
    if let Some(cpus) = args.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(OpError::Usage(format!("--cpus {cpus}: a positive number")));
        }
    }
    if args.args.is_empty() {
        return Err(NativeError::NoCommand.into());
    }
    Ok(Some(NativeSpec {
        isolation,
        command: args.args.clone(),
    }))
}

pub async fn run(ops: &dyn Ops, args: RunArgs) -> OpResult<i32> {
    let native = native(&args)?;
    let mut agents = Vec::new();
    if native.is_none() {
        let Some(path) = &args.agent else {
            return Err(OpError::Usage(
                "nexus run needs an agent: AGENT.wasm, --image IMAGE -- CMD, or --isolation host -- CMD"
                    .into(),
            ));
        };
        agents.push(agent(&path.display().to_string(), args.args)?);
        for spec in &args.with {
            let (path, rest) = companion(spec)?;
            agents.push(agent(&path, rest)?);
        }
    }
    let spec = RunSpec {
        zone: args.zone.zone,
        agents,
        native,
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

#[cfg(test)]
mod tests {
    use super::companion;

    #[test]
    fn companions_are_split_like_a_shell_would() {
        let (path, args) = companion("b.wasm 'two words' three \"four five\"").unwrap();
        assert_eq!(path, "b.wasm");
        assert_eq!(args, ["two words", "three", "four five"]);
        let (path, args) = companion("'my agent.wasm'").unwrap();
        assert_eq!((path.as_str(), args.len()), ("my agent.wasm", 0));
        assert!(companion("b.wasm 'unclosed").is_err());
        assert!(companion("   ").is_err());
    }
}
