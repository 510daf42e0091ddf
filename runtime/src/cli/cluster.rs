//! `nexus cluster`: the operator's certificate authority (see
//! `node::tls::authority`): create it, issue node certificates, revoke.

use super::args::ClusterCmd;
use crate::node::tls::authority::{Authority, Issued};
use crate::ops::OpResult;

pub fn run(cmd: ClusterCmd) -> OpResult<()> {
    match cmd {
        ClusterCmd::Ca { dir, days } => {
            Authority::create(&dir, days)?;
            println!(
                "created the cluster CA in {} (keep its ca.key off the nodes)",
                dir.display()
            );
        }
        ClusterCmd::Cert {
            ca_dir,
            id,
            out,
            hosts,
            days,
        } => {
            let issued = Authority::open(&ca_dir)?.issue_node(id, &hosts, days, &out)?;
            println!("issued node {id}'s certificate, valid {days} days");
            print_files(&issued);
        }
        ClusterCmd::Revoke { ca_dir, cert } => {
            let issued = Authority::open(&ca_dir)?.revoke(&cert)?;
            match issued.info.node {
                Some(n) => println!("revoked node {n}'s certificate {}", cert.display()),
                None => println!("revoked {}", cert.display()),
            }
            print_files(&issued);
            println!("copy it into every node's TLS directory, then send each node SIGHUP");
        }
    }
    Ok(())
}

fn print_files(issued: &Issued) {
    for f in &issued.files {
        println!("  {}", f.display());
    }
}
