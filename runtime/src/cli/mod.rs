//! The `nexus` command line: clap definitions (`args`), and one module per
//! command group that parses its arguments, calls the operations layer
//! ([`crate::ops::Ops`], local or through a node alike) and prints.

pub mod access;
pub mod args;
pub mod audit;
pub mod build;
pub mod cluster;
pub mod compile;
pub mod fs;
pub mod issuer;
pub mod node;
pub mod pipe;
pub mod run;
pub mod stress;
pub mod tree;
pub mod zone;

pub use args::*;

use crate::ops::{CheckQuery, OpResult, Ops};

/// Runs a kernel command on `ops`; returns the process's exit code.
/// `as_principal` is `--as`, which `token issue` reads as the token's
/// principal.
pub async fn dispatch(
    ops: &dyn Ops,
    as_principal: Option<&str>,
    cmd: KernelCommand,
) -> OpResult<i32> {
    let done = match cmd {
        KernelCommand::Run(args) => return run::run(ops, args).await,
        KernelCommand::Token(cmd) => access::token(ops, as_principal, cmd).await,
        KernelCommand::Secret(cmd) => access::secret(ops, cmd).await,
        KernelCommand::Zone(cmd) => zone::run(ops, cmd).await,
        KernelCommand::Fs(cmd) => fs::run(ops, cmd).await,
        KernelCommand::Pipe(cmd) => pipe::run(ops, cmd).await,
        KernelCommand::Mount { zone, path, target } => {
            fs::mount(ops, &zone.zone, &path, &target).await
        }
        KernelCommand::Gc { json } => zone::gc(ops, json).await,
        KernelCommand::Stress(args) => stress::run(ops, args).await,
        KernelCommand::Grant(args) => access::grant(ops, args, true).await,
        KernelCommand::Revoke(args) => access::grant(ops, args, false).await,
        KernelCommand::Check {
            zone,
            subject,
            permission,
            object,
            at,
            json,
        } => {
            let query = CheckQuery {
                subject,
                permission,
                object,
                at,
            };
            access::check(ops, &zone.zone, query, json).await
        }
        KernelCommand::Tuples { zone, json } => access::tuples(ops, &zone.zone, json).await,
    };
    done.map(|()| 0)
}
