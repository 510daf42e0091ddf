//! `nexus issuer`: token signing keys, edited in the data directory
//! without opening the kernel (so also beside a running node, which
//! re-reads its `issuers` file on SIGHUP).

use std::path::Path;

use nexus_kernel::issuer_keys::{self, KeyInfo};

use super::args::IssuerCmd;
use crate::ops::OpResult;

pub fn run(home: &Path, cmd: IssuerCmd) -> OpResult<()> {
    match cmd {
        IssuerCmd::Show => print(&issuer_keys::show(home)?),
        IssuerCmd::Trust { key } => {
            let k = issuer_keys::trust(home, &key)?;
            println!("trusting key {} (running nodes: send SIGHUP)", k.kid);
        }
        IssuerCmd::Retire { key } => {
            let k = issuer_keys::retire(home, &key)?;
            println!(
                "retired key {}: tokens it signed are refused (running nodes: send SIGHUP)",
                k.kid
            );
        }
        IssuerCmd::Rotate => {
            let (old, new) = issuer_keys::rotate(home)?;
            println!("new signing key:");
            print(&new);
            println!(
                "the old key {} stays trusted here until `nexus issuer retire {}`; \
                 trust the new one on every node",
                old.kid, old.kid
            );
        }
    }
    Ok(())
}

fn print(k: &KeyInfo) {
    println!("{}  (key id {})", k.key, k.kid);
}
