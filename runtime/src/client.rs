//! Client mode: with `--node ADDR` the command runs on that node through
//! its gRPC API, authenticated by `--token`, instead of on a local data
//! directory. Status codes map once, here, to CLI errors.

use std::io::{Read, Write};

use nexus_kernel::KernelError;
use nexus_proto::node::node_client::NodeClient;
use nexus_proto::node::{
    CheckRequest, Companion, CreateZoneRequest, Empty, IssueRequest, MountRequest, PathRequest,
    PipeCatRequest, PipeCreateRequest, PutRequest, RenameRequest, Replica, ReplicaChange,
    RunRequest, TokenRef, TupleRequest, VerifyRequest, ZoneCheckRequest, ZoneRef,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cli::{FsCmd, KernelCommand, PipeCmd, TokenCmd, ZoneCmd};
use crate::error::{CliError, CliResult};

/// A gRPC status as the CLI error the same failure has in embedded mode.
fn cli_error(s: Status) -> CliError {
    let kind: fn(String) -> KernelError = match s.code() {
        Code::NotFound => KernelError::NotFound,
        Code::PermissionDenied | Code::Unauthenticated => KernelError::Access,
        Code::AlreadyExists => KernelError::Exist,
        Code::InvalidArgument => KernelError::Invalid,
        Code::FailedPrecondition => KernelError::Busy,
        Code::Unavailable => KernelError::Unavailable,
        _ => KernelError::Storage,
    };
    // The node sent the kernel error as it prints ("already exists: …"):
    // do not say the kind twice.
    let prefix = kind(String::new()).to_string();
    let m = s.message();
    CliError::Kernel(kind(m.strip_prefix(&prefix).unwrap_or(m).to_owned()))
}

struct Client {
    inner: NodeClient<Channel>,
    token: String,
}

impl Client {
    fn request<T>(&self, msg: T) -> CliResult<Request<T>> {
        let mut r = Request::new(msg);
        let v = format!("Bearer {}", self.token).parse().map_err(|_| {
            CliError::Usage("the token has characters a header cannot carry".into())
        })?;
        r.metadata_mut().insert("authorization", v);
        Ok(r)
    }
}

/// `3` → voter 3, `3w` → witness 3.
fn replica(spec: &str) -> CliResult<Replica> {
    let (num, witness) = match spec.strip_suffix('w') {
        Some(n) => (n, true),
        None => (spec, false),
    };
    let node = num
        .parse()
        .map_err(|_| CliError::Usage(format!("--replicas {spec:?}: use node ids, e.g. 1,2,3w")))?;
    Ok(Replica { node, witness })
}

/// `nexus run --node`: sends the agent, prints its output as it comes,
/// ends as the run did on the node.
async fn run_agent(c: &mut Client, args: crate::cli::RunArgs) -> CliResult<i32> {
    use nexus_proto::node::run_event::Event;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| CliError::local(path.display().to_string(), e))
    };
    let mut with = Vec::new();
    for spec in &args.with {
        let (path, args) = crate::run_cmd::companion(spec)?;
        with.push(Companion {
            agent: read(&path)?,
            name: path.display().to_string(),
            args,
        });
    }
    let path = &args.agent;
    let agent = read(path)?;
    let req = c.request(RunRequest {
        zone: args.zone.zone,
        agent,
        name: path.display().to_string(),
        args: args.args,
        env: args.env,
        timeout: args.timeout.unwrap_or_default(),
        memory: args.memory.unwrap_or_default(),
        fuel: args.fuel,
        with,
    })?;
    let mut events = c.inner.run(req).await.map_err(cli_error)?.into_inner();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(event) = events.message().await.map_err(cli_error)? {
        match event.event {
            Some(Event::Stdout(b)) => {
                out.write_all(&b)
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::local("stdout", e))?;
            }
            Some(Event::Stderr(b)) => {
                let _ = err.write_all(&b);
            }
            Some(Event::Exit(exit)) => {
                if !exit.error.is_empty() {
                    eprintln!("error: {}", exit.error);
                }
                if !exit.hint.is_empty() {
                    eprintln!("hint: {}", exit.hint);
                }
                return Ok(exit.code);
            }
            None => {}
        }
    }
    Err(CliError::Kernel(KernelError::Unavailable(
        "the node ended the run without its exit status".into(),
    )))
}

/// `nexus pipe …` through a node (on that node's rings).
async fn pipe(c: &mut Client, cmd: PipeCmd) -> CliResult {
    let at = |zone: String, path: String| PathRequest {
        zone,
        path,
        parents: false,
        linearizable: false,
    };
    match cmd {
        PipeCmd::Create {
            zone,
            path,
            capacity,
        } => {
            let req = c.request(PipeCreateRequest {
                zone: zone.zone,
                path,
                capacity,
            })?;
            c.inner.pipe_create(req).await.map_err(cli_error)?;
        }
        PipeCmd::Stat { zone, path, json } => {
            let req = c.request(at(zone.zone, path.clone()))?;
            let reply = c
                .inner
                .pipe_stat(req)
                .await
                .map_err(cli_error)?
                .into_inner();
            let stat = parse(&reply.json)?;
            if json {
                return crate::output::json(&stat);
            }
            crate::pipe_cmd::print_stat(&path, &stat);
        }
        PipeCmd::Ls { zone, dir, json } => {
            let req = c.request(at(zone.zone, dir))?;
            let reply = c
                .inner
                .pipe_list(req)
                .await
                .map_err(cli_error)?
                .into_inner();
            crate::pipe_cmd::print_list(&parse::<Vec<_>>(&reply.json)?, json)?;
        }
        PipeCmd::Cat { zone, path, follow } => {
            let req = c.request(PipeCatRequest {
                zone: zone.zone,
                path,
                follow,
            })?;
            let mut chunks = c.inner.pipe_cat(req).await.map_err(cli_error)?.into_inner();
            let mut out = std::io::stdout();
            while let Some(chunk) = chunks.message().await.map_err(cli_error)? {
                out.write_all(&chunk.data)
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::local("stdout", e))?;
            }
        }
        PipeCmd::Rm { zone, path } => {
            let req = c.request(at(zone.zone, path))?;
            c.inner.pipe_remove(req).await.map_err(cli_error)?;
        }
    }
    Ok(())
}

/// A node's JSON answer.
fn parse<T: serde::de::DeserializeOwned>(json: &str) -> CliResult<T> {
    serde_json::from_str(json)
        .map_err(|e| CliError::Failed(format!("an answer the node should not give: {e}")))
}

/// `DEST` (or stdout for `-`) gets `data`.
fn write_local(dest: &str, data: &[u8]) -> CliResult {
    if dest == "-" {
        return std::io::stdout()
            .write_all(data)
            .map_err(|e| CliError::local("stdout", e));
    }
    std::fs::write(dest, data).map_err(|e| CliError::local(dest, e))
}

/// `nexus grant|revoke` through the node.
async fn write_tuple(c: &mut Client, t: crate::cli::TupleArgs, insert: bool) -> CliResult {
    let req = c.request(TupleRequest {
        zone: t.zone.zone,
        subject: t.subject,
        relation: t.relation,
        object: t.object,
        insert,
    })?;
    let reply = c
        .inner
        .write_tuple(req)
        .await
        .map_err(cli_error)?
        .into_inner();
    crate::access_cmd::print_written(&parse(&reply.json)?);
    Ok(())
}

/// Prints the group after a membership change, and any warning.
fn membership(zone: &str, json: &str) -> CliResult {
    let reply: crate::node::api::MembershipReply = parse(json)?;
    if let Some(w) = &reply.warning {
        eprintln!("nexus: warning: {w}");
    }
    crate::zone_cmd::print_status(zone, &reply.status, false)
}

pub async fn run(
    addr: &str,
    token: Option<&str>,
    as_principal: Option<&str>,
    cmd: KernelCommand,
) -> CliResult<i32> {
    let token = token
        .ok_or_else(|| CliError::Usage("--node needs --token (see `nexus token issue`)".into()))?
        .to_owned();
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let inner = NodeClient::connect(url)
        .await
        .map_err(|e| CliError::Kernel(KernelError::Unavailable(format!("node {addr}: {e}"))))?;
    let mut c = Client { inner, token };
    let path = |zone: &str, path: &str, parents: bool, linearizable: bool| PathRequest {
        zone: zone.to_owned(),
        path: path.to_owned(),
        parents,
        linearizable,
    };
    match cmd {
        KernelCommand::Zone(ZoneCmd::Create { name, replicas }) => {
            let replicas = replicas
                .iter()
                .map(|r| replica(r))
                .collect::<CliResult<Vec<_>>>()?;
            let req = c.request(CreateZoneRequest {
                zone: name.clone(),
                replicas,
            })?;
            c.inner.create_zone(req).await.map_err(cli_error)?;
            println!("created zone {name}");
        }
        KernelCommand::Zone(ZoneCmd::AddReplica {
            name,
            replica: spec,
        }) => {
            let req = c.request(ReplicaChange {
                zone: name.clone(),
                replica: Some(replica(&spec)?),
            })?;
            let reply = c.inner.add_replica(req).await.map_err(cli_error)?;
            membership(&name, &reply.into_inner().json)?;
        }
        KernelCommand::Zone(ZoneCmd::RemoveReplica { name, member }) => {
            let req = c.request(ReplicaChange {
                zone: name.clone(),
                replica: Some(Replica {
                    node: member,
                    witness: false,
                }),
            })?;
            let reply = c.inner.remove_replica(req).await.map_err(cli_error)?;
            membership(&name, &reply.into_inner().json)?;
        }
        KernelCommand::Zone(ZoneCmd::List { json }) => {
            let reply = c.inner.zone_list(c.request(Empty {})?).await;
            let rows: Vec<crate::zone_cmd::ZoneRow> =
                parse(&reply.map_err(cli_error)?.into_inner().json)?;
            crate::zone_cmd::print_list(&rows, json)?;
        }
        KernelCommand::Zone(ZoneCmd::Destroy { name, yes }) => {
            if !yes {
                return Err(CliError::Usage(format!(
                    "destroying zone {name} deletes all its files on every node; repeat with --yes to confirm"
                )));
            }
            let req = c.request(ZoneRef { zone: name.clone() })?;
            c.inner.destroy_zone(req).await.map_err(cli_error)?;
            println!("destroyed zone {name}");
        }
        KernelCommand::Gc { json } => {
            let reply = c.inner.gc(c.request(Empty {})?).await.map_err(cli_error)?;
            crate::zone_cmd::print_gc(&parse(&reply.into_inner().json)?, json)?;
        }
        KernelCommand::Zone(ZoneCmd::Check { name, deep, json }) => {
            let req = c.request(ZoneCheckRequest { zone: name, deep })?;
            let reply = c
                .inner
                .zone_check(req)
                .await
                .map_err(cli_error)?
                .into_inner();
            crate::zone_cmd::print_check(&parse(&reply.json)?, json)?;
        }
        KernelCommand::Zone(ZoneCmd::Status { name, json }) => {
            let req = c.request(ZoneRef { zone: name.clone() })?;
            let reply = c.inner.zone_status(req).await.map_err(cli_error)?;
            let status = serde_json::from_str(&reply.into_inner().json)
                .map_err(|e| CliError::Failed(format!("zone status: {e}")))?;
            crate::zone_cmd::print_status(&name, &status, json)?;
        }
        KernelCommand::Fs(FsCmd::Mkdir {
            zone,
            parents,
            path: p,
        }) => {
            let req = c.request(path(&zone.zone, &p, parents, false))?;
            c.inner.mkdir(req).await.map_err(cli_error)?;
        }
        KernelCommand::Fs(FsCmd::Put { zone, src, dest }) => {
            let mut data = Vec::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .map_err(|e| CliError::local("stdin", e))?;
            } else {
                data = std::fs::read(&src).map_err(|e| CliError::local(&src, e))?;
            }
            let req = c.request(PutRequest {
                zone: zone.zone,
                path: dest,
                data,
            })?;
            c.inner.put(req).await.map_err(cli_error)?;
        }
        KernelCommand::Fs(FsCmd::Cat {
            zone,
            path: p,
            read,
        }) => {
            let req = c.request(path(&zone.zone, &p, false, read.linearizable))?;
            let data = c.inner.get(req).await.map_err(cli_error)?.into_inner().data;
            write_local("-", &data)?;
        }
        KernelCommand::Fs(FsCmd::Stat {
            zone,
            path: p,
            read,
            json,
        }) => {
            let req = c.request(path(&zone.zone, &p, false, read.linearizable))?;
            let reply = c.inner.stat(req).await.map_err(cli_error)?.into_inner();
            crate::fs_cmd::print_stat(&p, &parse(&reply.json)?, json)?;
        }
        KernelCommand::Fs(FsCmd::Ls {
            zone,
            path: p,
            read,
            json,
        }) => {
            let req = c.request(path(&zone.zone, &p, false, read.linearizable))?;
            let reply = c.inner.list(req).await.map_err(cli_error)?.into_inner();
            crate::fs_cmd::print_ls(parse(&reply.json)?, json)?;
        }
        KernelCommand::Fs(FsCmd::Rm {
            zone,
            recursive,
            path: p,
        }) => {
            let req = c.request(path(&zone.zone, &p, recursive, false))?;
            c.inner.remove(req).await.map_err(cli_error)?;
        }
        KernelCommand::Fs(FsCmd::Mv { zone, from, to }) => {
            let req = c.request(RenameRequest {
                zone: zone.zone,
                from,
                to,
            })?;
            c.inner.rename(req).await.map_err(cli_error)?;
        }
        KernelCommand::Fs(FsCmd::Get { zone, src, dest }) => {
            let req = c.request(path(&zone.zone, &src, false, false))?;
            let data = c.inner.get(req).await.map_err(cli_error)?.into_inner().data;
            write_local(&dest, &data)?;
        }
        KernelCommand::Grant(t) => write_tuple(&mut c, t, true).await?,
        KernelCommand::Revoke(t) => write_tuple(&mut c, t, false).await?,
        KernelCommand::Check {
            zone,
            subject,
            permission,
            object,
            at,
            json,
        } => {
            let req = c.request(CheckRequest {
                zone: zone.zone,
                subject,
                permission,
                object: object.clone(),
                at,
            })?;
            let reply = c.inner.check(req).await.map_err(cli_error)?.into_inner();
            let decision: crate::access_cmd::Decision = parse(&reply.json)?;
            crate::access_cmd::print_decision(&decision, &object, json)?;
        }
        KernelCommand::Tuples { zone, json } => {
            let req = c.request(ZoneRef { zone: zone.zone })?;
            let reply = c.inner.tuples(req).await.map_err(cli_error)?.into_inner();
            crate::access_cmd::print_tuples(parse(&reply.json)?, json)?;
        }
        // Through a node a revocation is always the zone's (replicated):
        // without --zone, the caller's token's zone.
        KernelCommand::Token(TokenCmd::Revoke { id, zone }) => {
            let req = c.request(TokenRef {
                zone: zone.clone().unwrap_or_default(),
                id: id.clone(),
            })?;
            c.inner.revoke_token(req).await.map_err(cli_error)?;
            match zone {
                Some(zone) => println!("revoked token {id} in zone {zone}"),
                None => println!("revoked token {id} in the token's zone"),
            }
        }
        KernelCommand::Token(TokenCmd::Issue {
            zone,
            ttl,
            caps,
            json,
        }) => {
            let req = c.request(IssueRequest {
                zone: zone.zone,
                principal: as_principal.unwrap_or_default().to_owned(),
                ttl: ttl.clone(),
                caps,
            })?;
            let reply = c
                .inner
                .issue_token(req)
                .await
                .map_err(cli_error)?
                .into_inner();
            crate::access_cmd::print_issued(&parse(&reply.json)?, &ttl, json)?;
        }
        KernelCommand::Token(TokenCmd::Verify { token, json }) => {
            let req = c.request(VerifyRequest { token })?;
            let reply = c
                .inner
                .verify_token(req)
                .await
                .map_err(cli_error)?
                .into_inner();
            crate::access_cmd::print_claims(&parse(&reply.json)?, json)?;
        }
        KernelCommand::Pipe(cmd) => pipe(&mut c, cmd).await?,
        KernelCommand::Stress(args) => {
            crate::stress::check(&args)?;
            let req = c.request(path(&args.zone.zone, &args.dir, true, false))?;
            c.inner.mkdir(req).await.map_err(cli_error)?;
            let zone = args.zone.zone.clone();
            crate::stress::storm(&args, |dest, data| {
                let mut inner = c.inner.clone();
                let req = c.request(PutRequest {
                    zone: zone.clone(),
                    path: dest,
                    data,
                });
                async move {
                    inner.put(req?).await.map_err(cli_error)?;
                    Ok(())
                }
            })
            .await?;
        }
        KernelCommand::Run(args) => return run_agent(&mut c, args).await,
        KernelCommand::Mount { zone, path, target } => {
            let req = c.request(MountRequest {
                zone: zone.zone,
                path,
                target,
            })?;
            c.inner.mount(req).await.map_err(cli_error)?;
        }
    }
    Ok(0)
}
