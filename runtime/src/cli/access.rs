//! `nexus grant|revoke|check|tuples|token …`: the gate from the command
//! line; arguments in, the operation, output out.

use nexus_kernel::Claims;

use super::args::{SecretCmd, TokenCmd, TupleArgs};
use crate::ops::{CheckQuery, Decision, Issued, OpError, OpResult, Ops, TupleRow, TupleSpec};
use crate::output;

pub async fn grant(ops: &dyn Ops, args: TupleArgs, insert: bool) -> OpResult {
    let tuple = TupleSpec {
        subject: args.subject,
        relation: args.relation,
        object: args.object,
    };
    let w = ops.write_tuple(&args.zone.zone, tuple, insert).await?;
    let verb = if w.inserted { "granted" } else { "revoked" };
    println!("{verb} {} (zone revision {})", w.tuple, w.revision);
    Ok(())
}

pub async fn check(ops: &dyn Ops, zone: &str, q: CheckQuery, json: bool) -> OpResult {
    let asked = q.object.clone();
    print_decision(&ops.check(zone, q).await?, &asked, json)
}

/// Prints a decision (`asked`: the object as the user wrote it); a denial
/// is the error `Denied`.
fn print_decision(d: &Decision, asked: &str, json: bool) -> OpResult {
    let (who, perm, obj) = (&d.subject, &d.permission, &d.object);
    let asked = output::shown(asked);
    if json {
        output::json(d)?;
    } else if d.allowed {
        println!("allowed: {who} may {perm} {asked} ({obj})");
        for step in &d.proof {
            println!("  because {}", output::shown(step));
        }
    } else {
        println!("denied: {who} may not {perm} {asked} ({obj}): no tuple grants it");
    }
    if d.allowed {
        Ok(())
    } else {
        Err(OpError::Denied)
    }
}

pub async fn tuples(ops: &dyn Ops, zone: &str, json: bool) -> OpResult {
    let rows: Vec<TupleRow> = ops.tuples(zone).await?;
    if json {
        return output::json(&rows);
    }
    for r in rows {
        let tuple = output::shown(&r.tuple);
        match r.path {
            Some(p) => println!("{tuple}  ({})", output::shown(&p)),
            None => println!("{tuple}"),
        }
    }
    Ok(())
}

fn print_issued(out: &Issued, ttl: &str, json: bool) -> OpResult {
    if json {
        return output::json(out);
    }
    let c = &out.claims;
    println!("{}", out.token);
    eprintln!(
        "token {} for {} in zone {} ({}), expires in {ttl}",
        c.id, c.principal, c.zone, c.caps
    );
    Ok(())
}

fn print_claims(claims: &Claims, json: bool) -> OpResult {
    if json {
        return output::json(claims);
    }
    println!(
        "valid: {} in zone {} ({})",
        claims.principal, claims.zone, claims.caps
    );
    println!(
        "id {}, expires at {}",
        claims.id,
        output::time(claims.expires * 1_000_000_000)
    );
    Ok(())
}

/// `token …`; for `issue`, `for_principal` (`--as`) names the token's
/// principal.
pub async fn token(ops: &dyn Ops, for_principal: Option<&str>, cmd: TokenCmd) -> OpResult {
    match cmd {
        TokenCmd::Issue {
            zone,
            ttl,
            caps,
            reach,
            json,
        } => {
            let lifetime = crate::units::duration(&ttl)?;
            let out = ops
                .token_issue(&zone.zone, for_principal, lifetime, &caps, &reach)
                .await?;
            print_issued(&out, &ttl, json)
        }
        TokenCmd::Verify { token, json } => print_claims(&ops.token_verify(&token).await?, json),
        TokenCmd::Revoke { id, zone } => {
            match ops.token_revoke(zone.as_deref(), &id).await? {
                Some(zone) => println!("revoked token {id} in zone {zone}"),
                None => println!("revoked token {id}"),
            }
            Ok(())
        }
    }
}

/// `secret set|rm|list`.
pub async fn secret(ops: &dyn Ops, cmd: SecretCmd) -> OpResult {
    match cmd {
        SecretCmd::Set {
            zone,
            destination,
            headers,
        } => {
            let rev = ops.secret_set(&zone.zone, &destination, &headers).await?;
            println!(
                "secret headers set for {} (zone revision {rev})",
                output::shown(&destination)
            );
        }
        SecretCmd::Rm { zone, destination } => {
            let rev = ops.secret_set(&zone.zone, &destination, &[]).await?;
            println!(
                "secrets of {} removed (zone revision {rev})",
                output::shown(&destination)
            );
        }
        SecretCmd::List { zone, json } => {
            let rows = ops.secret_list(&zone.zone).await?;
            if json {
                return output::json(&rows);
            }
            for r in rows {
                println!(
                    "{}  {}",
                    output::shown(&r.destination),
                    r.headers.join(", ")
                );
            }
        }
    }
    Ok(())
}
