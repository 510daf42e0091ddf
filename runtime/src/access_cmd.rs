//! `nexus grant|revoke|check|tuples|token …`: the gate from the command line.

use nexus_kernel::identity::{Capabilities, Permission, Principal, Task};
use nexus_kernel::kernel::Kernel;
use nexus_kernel::rebac::{ObjectRef, Relation, Subject, Tuple};
use nexus_kernel::types::ZoneId;
use nexus_kernel::KernelError;
use serde::Serialize;

use crate::cli::{TokenCmd, TupleArgs, ZoneArg};
use crate::error::{CliError, CliResult};
use crate::output;
use crate::session::{operator, Acting};

/// OBJECT on the command line: a path, `zone`, or `NAMESPACE:ID`.
fn object(k: &Kernel, task: &Task, spec: &str) -> CliResult<ObjectRef> {
    if spec == "zone" {
        return Ok(ObjectRef::zone(task.zone()));
    }
    if spec.starts_with('/') {
        let (zone, obj) = k.object_at(task, spec)?;
        if &zone != task.zone() {
            return Err(CliError::Usage(format!(
                "{spec} lies in zone {zone} (through a mount): grant there with --zone {zone}"
            )));
        }
        return Ok(obj);
    }
    Ok(ObjectRef::parse(spec)?)
}

pub async fn grant(k: &Kernel, acting: &Acting, args: TupleArgs, insert: bool) -> CliResult {
    let task = acting.task(k, &args.zone.zone)?;
    let written = write_tuple(
        k,
        &task,
        &args.subject,
        &args.relation,
        &args.object,
        insert,
    )
    .await?;
    print_written(&written);
    Ok(())
}

/// What `grant`/`revoke` did: the tuple and the zone revision it made.
#[derive(Serialize, serde::Deserialize)]
pub struct Written {
    pub tuple: String,
    pub revision: u64,
    pub inserted: bool,
}

/// Inserts (or deletes) `subject relation object` as `task`.
pub async fn write_tuple(
    k: &Kernel,
    task: &Task,
    subject: &str,
    relation: &str,
    obj: &str,
    insert: bool,
) -> CliResult<Written> {
    let tuple = Tuple {
        object: object(k, task, obj)?,
        relation: Relation::parse(relation)?,
        subject: Subject::parse(subject)?,
    };
    let shown = tuple.to_string();
    let revision = if insert {
        k.write_tuples(task, vec![tuple], vec![]).await?
    } else {
        k.write_tuples(task, vec![], vec![tuple]).await?
    };
    Ok(Written {
        tuple: shown,
        revision,
        inserted: insert,
    })
}

pub fn print_written(w: &Written) {
    let verb = if w.inserted { "granted" } else { "revoked" };
    println!("{verb} {} (zone revision {})", w.tuple, w.revision);
}

/// The arguments of `nexus check`.
pub struct CheckQuery<'a> {
    pub subject: &'a str,
    pub permission: &'a str,
    pub object: &'a str,
    pub at: Option<u64>,
}

/// A decision of `nexus check`, with its proof.
#[derive(Serialize, serde::Deserialize)]
pub struct Decision {
    pub subject: String,
    pub permission: String,
    pub object: String,
    pub allowed: bool,
    pub proof: Vec<String>,
}

pub async fn check(
    k: &Kernel,
    acting: &Acting,
    zone: &ZoneArg,
    q: CheckQuery<'_>,
    json: bool,
) -> CliResult {
    let task = acting.task(k, &zone.zone)?;
    let d = decide(k, &task, &q).await?;
    print_decision(&d, q.object, json)
}

pub async fn decide(k: &Kernel, task: &Task, q: &CheckQuery<'_>) -> CliResult<Decision> {
    let who = Principal::parse(q.subject)?;
    let perm = Permission::parse(q.permission)?;
    let obj = object(k, task, q.object)?;
    let d = k.explain(task, &who, &obj, perm, q.at).await?;
    Ok(Decision {
        subject: who.to_string(),
        permission: perm.as_str().to_owned(),
        object: obj.to_string(),
        allowed: d.allowed,
        proof: d.proof,
    })
}

/// Prints a decision (`asked`: the object as the user wrote it); a denial
/// is the error `Denied`.
pub fn print_decision(d: &Decision, asked: &str, json: bool) -> CliResult {
    let (who, perm, obj) = (&d.subject, &d.permission, &d.object);
    if json {
        output::json(d)?;
    } else if d.allowed {
        println!("allowed: {who} may {perm} {asked} ({obj})");
        for step in &d.proof {
            println!("  because {step}");
        }
    } else {
        println!("denied: {who} may not {perm} {asked} ({obj}): no tuple grants it");
    }
    if d.allowed {
        Ok(())
    } else {
        Err(CliError::Denied)
    }
}

#[derive(Serialize, serde::Deserialize)]
pub struct TupleRow {
    tuple: String,
    object: String,
    relation: String,
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

pub fn tuples(k: &Kernel, acting: &Acting, zone: &ZoneArg, json: bool) -> CliResult {
    let task = acting.task(k, &zone.zone)?;
    print_tuples(tuple_rows(k, &task)?, json)
}

/// The zone's tuples, each with the path of the inode it names.
pub fn tuple_rows(k: &Kernel, task: &Task) -> CliResult<Vec<TupleRow>> {
    Ok(k.tuples(task)?
        .into_iter()
        .map(|(t, path)| TupleRow {
            tuple: t.to_string(),
            object: t.object.to_string(),
            relation: t.relation.as_str().to_owned(),
            subject: t.subject.to_string(),
            path,
        })
        .collect())
}

pub fn print_tuples(rows: Vec<TupleRow>, json: bool) -> CliResult {
    if json {
        return output::json(&rows);
    }
    for r in rows {
        match r.path {
            Some(p) => println!("{}  ({p})", r.tuple),
            None => println!("{}", r.tuple),
        }
    }
    Ok(())
}

/// A token just issued, and what it says.
#[derive(Serialize, serde::Deserialize)]
pub struct TokenOutput {
    pub token: String,
    #[serde(flatten)]
    pub claims: nexus_kernel::token::Claims,
}

/// Signs a token for `for_principal` (default: the issuer) in `zone`. Only
/// a zone admin hands out identities in it, and never more capabilities
/// than the issuer's own task holds. A zone this node does not serve yet (a
/// cluster zone about to be created through a node) has no admin: the
/// node's operator, who holds the signing key anyway, may issue for it.
pub fn issue(
    k: &Kernel,
    issuer: &Acting,
    for_principal: Option<&str>,
    zone: &str,
    ttl: &str,
    caps: &str,
) -> CliResult<TokenOutput> {
    let zone_id = ZoneId::new(zone)?;
    let subject = match for_principal {
        Some(p) => Principal::parse(p)?,
        None => issuer.principal.clone(),
    };
    let caps = Capabilities::parse(caps)?;
    let bootstrap = issuer.zone.is_none()
        && matches!(k.zone_record(&zone_id), Err(KernelError::ZoneNotFound(_)));
    let held = if bootstrap {
        issuer.caps
    } else {
        let task = issuer.task(k, zone)?;
        let admin = k.check(
            &task,
            task.zone(),
            &ObjectRef::zone(task.zone()),
            Permission::Admin,
        )?;
        if !admin.allowed {
            return Err(KernelError::Access(format!(
                "{} may not issue tokens for zone {} (needs admin on it)",
                task.principal(),
                task.zone()
            ))
            .into());
        }
        task.caps()
    };
    if !held.contains(caps) {
        return Err(KernelError::Access(format!(
            "cannot grant capabilities {caps} beyond your own"
        ))
        .into());
    }
    let lifetime = crate::units::duration(ttl)?.as_secs() as i64;
    let (token, claims) = k.tokens().issue(subject, zone_id, caps, lifetime)?;
    Ok(TokenOutput { token, claims })
}

pub fn print_issued(out: &TokenOutput, ttl: &str, json: bool) -> CliResult {
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

pub fn print_claims(claims: &nexus_kernel::token::Claims, json: bool) -> CliResult {
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

pub async fn token(
    k: &Kernel,
    issuer: &Acting,
    for_principal: Option<&str>,
    cmd: TokenCmd,
) -> CliResult {
    match cmd {
        TokenCmd::Issue {
            zone,
            ttl,
            caps,
            json,
        } => {
            let out = issue(k, issuer, for_principal, &zone.zone, &ttl, &caps)?;
            print_issued(&out, &ttl, json)
        }
        TokenCmd::Verify { token, json } => print_claims(&k.verify_token(&token)?, json),
        TokenCmd::Revoke {
            id,
            zone: Some(zone),
        } => {
            k.revoke_token(&issuer.task(k, &zone)?, &id).await?;
            println!("revoked token {id} in zone {zone}");
            Ok(())
        }
        TokenCmd::Revoke { id, zone: None } => {
            // Revocation is node administration: the operator only.
            if issuer.principal != operator() || issuer.zone.is_some() {
                return Err(
                    KernelError::Access("only the node's operator revokes tokens".into()).into(),
                );
            }
            k.tokens().revoke(&id)?;
            println!("revoked token {id}");
            Ok(())
        }
    }
}
