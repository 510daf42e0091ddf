//! The client API of a node (`nexus.node.v1.Node`): every call carries a
//! token (`authorization: Bearer …`), verified by the node; the call runs
//! as a task of the token's principal in the token's zone, so the gate
//! decides exactly as in embedded mode. Kernel errors map once, here, to
//! gRPC status codes.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_kernel::identity::Task;
use nexus_kernel::kernel::Kernel;
use nexus_kernel::replica::Role;
use nexus_kernel::token::Claims;
use nexus_kernel::types::{ReplicaId, ZoneId};
use nexus_kernel::vfs::MAX_READ;
use nexus_kernel::{ErrorCode, KernelError};
use nexus_proto::node::node_server::Node;
use nexus_proto::node::{
    CheckRequest, CreateZoneRequest, DataReply, Empty, IssueRequest, JoinZoneRequest, JsonReply,
    MountRequest, PathRequest, PipeCatRequest, PipeCreateRequest, PutRequest, RenameRequest,
    Replica, ReplicaChange, RunEvent, RunRequest, TokenRef, TupleRequest, VerifyRequest,
    ZoneCheckRequest, ZoneRef, ZoneReply,
};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// What `AddReplica` and `RemoveReplica` answer (as JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MembershipReply {
    /// The zone's status on the node that made the change, afterwards.
    pub status: nexus_kernel::driver::ZoneStatus,
    /// Something the caller should know (a removed node that could not be
    /// told to delete its copy).
    pub warning: Option<String>,
}

mod group;

/// The one mapping from kernel errors to gRPC status codes.
pub fn status(e: KernelError) -> Status {
    let msg = e.to_string();
    tracing::debug!("request failed: {msg}");
    match e.code() {
        ErrorCode::NoEntry => Status::not_found(msg),
        ErrorCode::Access | ErrorCode::NotPermitted => Status::permission_denied(msg),
        ErrorCode::Exist => Status::already_exists(msg),
        ErrorCode::Invalid | ErrorCode::NameTooLong => Status::invalid_argument(msg),
        ErrorCode::Busy | ErrorCode::NotEmpty => Status::failed_precondition(msg),
        ErrorCode::Io if matches!(e, KernelError::Unavailable(_)) => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

/// A command's error, mapped the same way.
fn cli_status(e: crate::error::CliError) -> Status {
    use crate::error::CliError;
    match e {
        CliError::Kernel(k) => status(k),
        CliError::Usage(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

fn json(v: &impl serde::Serialize) -> Result<Response<JsonReply>, Status> {
    serde_json::to_string(v)
        .map(|json| Response::new(JsonReply { json }))
        .map_err(|e| Status::internal(e.to_string()))
}

pub struct NodeApi {
    kernel: Arc<Kernel>,
    /// Peer node id → address, for coordinating zone creation.
    peers: HashMap<ReplicaId, String>,
    runner: Arc<super::run::Runner>,
}

impl NodeApi {
    /// A task for a read; linearizable if the request asks.
    async fn reader(&self, req: &Request<PathRequest>) -> Result<Task, Status> {
        let task = self.task(req, &req.get_ref().zone)?;
        if req.get_ref().linearizable {
            self.kernel.linearize(&task).await.map_err(status)?;
        }
        Ok(task)
    }

    pub fn new(kernel: Arc<Kernel>, peers: &[(ReplicaId, String)]) -> Self {
        NodeApi {
            runner: Arc::new(super::run::Runner::new(kernel.clone())),
            kernel,
            peers: peers.iter().cloned().collect(),
        }
    }

    fn bearer<T>(req: &Request<T>) -> Result<String, Status> {
        req.metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| Status::unauthenticated("a token is required (nexus --token …)"))
    }

    /// The request's verified token, which must be for `zone`.
    fn claims<T>(&self, req: &Request<T>, zone: &str) -> Result<Claims, Status> {
        let token = Self::bearer(req)?;
        let claims = self
            .kernel
            .verify_token(&token)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let zone = ZoneId::new(zone).map_err(status)?;
        if claims.zone != zone {
            return Err(Status::permission_denied(format!(
                "the token is for zone {}, not {zone}",
                claims.zone
            )));
        }
        Ok(claims)
    }

    /// The request's token as the identity commands act with.
    fn acting<T>(&self, req: &Request<T>, zone: &str) -> Result<crate::session::Acting, Status> {
        let claims = self.claims(req, zone)?;
        Ok(crate::session::Acting {
            principal: claims.principal,
            caps: claims.caps,
            zone: Some(claims.zone),
        })
    }

    /// A task for the request's token in `zone`.
    fn task<T>(&self, req: &Request<T>, zone: &str) -> Result<Task, Status> {
        let claims = self.claims(req, zone)?;
        self.kernel
            .spawn_task(claims.principal, &claims.zone, claims.caps)
            .map_err(status)
    }

    fn role(witness: bool) -> Role {
        if witness {
            Role::Witness
        } else {
            Role::Voter
        }
    }

    fn replicas(list: &[Replica]) -> Vec<(ReplicaId, Role)> {
        list.iter()
            .map(|r| (r.node, Self::role(r.witness)))
            .collect()
    }
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn create_zone(
        &self,
        req: Request<CreateZoneRequest>,
    ) -> Result<Response<ZoneReply>, Status> {
        self.create_zone_across(req).await
    }

    async fn join_zone(
        &self,
        req: Request<JoinZoneRequest>,
    ) -> Result<Response<ZoneReply>, Status> {
        self.join_zone_across(req).await
    }

    async fn destroy_zone(&self, req: Request<ZoneRef>) -> Result<Response<Empty>, Status> {
        self.destroy_zone_across(req).await
    }

    async fn add_replica(
        &self,
        req: Request<ReplicaChange>,
    ) -> Result<Response<JsonReply>, Status> {
        self.add_replica_across(req).await
    }

    async fn remove_replica(
        &self,
        req: Request<ReplicaChange>,
    ) -> Result<Response<JsonReply>, Status> {
        self.remove_replica_across(req).await
    }

    async fn zone_status(&self, req: Request<ZoneRef>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        json(&self.kernel.zone_status(&task).await.map_err(status)?)
    }

    async fn zone_list(&self, req: Request<Empty>) -> Result<Response<JsonReply>, Status> {
        let claims = self
            .kernel
            .verify_token(&Self::bearer(&req)?)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        // A token sees its own zone only.
        let rows = match self.kernel.zone_record(&claims.zone) {
            Ok(r) => vec![crate::zone_cmd::ZoneRow::of(&self.kernel, &r).map_err(cli_status)?],
            Err(_) => Vec::new(),
        };
        json(&rows)
    }

    async fn gc(&self, req: Request<Empty>) -> Result<Response<JsonReply>, Status> {
        let claims = self
            .kernel
            .verify_token(&Self::bearer(&req)?)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let acting = crate::session::Acting {
            principal: claims.principal,
            caps: claims.caps,
            zone: Some(claims.zone),
        };
        json(
            &crate::zone_cmd::collect(&self.kernel, &acting)
                .await
                .map_err(cli_status)?,
        )
    }

    async fn zone_check(
        &self,
        req: Request<ZoneCheckRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let deep = req.get_ref().deep;
        json(&self.kernel.check_zone(&task, deep).await.map_err(status)?)
    }

    async fn leave_zone(&self, req: Request<ZoneRef>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        self.kernel.leave_zone(&task).map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn mkdir(&self, req: Request<PathRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let made = if r.parents {
            self.kernel.mkdir_all(&task, &r.path).await
        } else {
            self.kernel.mkdir(&task, &r.path).await
        };
        made.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let bar = indicatif::ProgressBar::hidden();
        crate::fs_cmd::replace(
            &self.kernel,
            &task,
            &mut r.data.as_slice(),
            "the request",
            &r.path,
            &bar,
        )
        .await
        .map_err(cli_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn get(&self, req: Request<PathRequest>) -> Result<Response<DataReply>, Status> {
        let task = self.reader(&req).await?;
        let r = req.into_inner();
        let h = self.kernel.resolve(&task, &r.path, true).map_err(status)?;
        let mut data = Vec::new();
        loop {
            let chunk = self
                .kernel
                .read(&task, &h, data.len() as u64, MAX_READ)
                .await
                .map_err(status)?;
            if chunk.is_empty() {
                break;
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Response::new(DataReply { data }))
    }

    async fn stat(&self, req: Request<PathRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.reader(&req).await?;
        json(
            &self
                .kernel
                .lstat(&task, &req.get_ref().path)
                .map_err(status)?,
        )
    }

    async fn list(&self, req: Request<PathRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.reader(&req).await?;
        let rows = crate::fs_cmd::ls_rows(&self.kernel, &task, &req.get_ref().path);
        json(&rows.map_err(cli_status)?)
    }

    type RunStream = ReceiverStream<Result<RunEvent, Status>>;

    async fn run(&self, req: Request<RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let events = self.runner.start(task, req.into_inner());
        Ok(Response::new(ReceiverStream::new(events)))
    }

    async fn remove(&self, req: Request<PathRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        crate::fs_cmd::remove(&self.kernel, &task, &r.path, r.parents)
            .await
            .map_err(cli_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn rename(&self, req: Request<RenameRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        self.kernel
            .rename(&task, &r.from, &r.to)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn write_tuple(&self, req: Request<TupleRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let written = crate::access_cmd::write_tuple(
            &self.kernel,
            &task,
            &r.subject,
            &r.relation,
            &r.object,
            r.insert,
        )
        .await
        .map_err(cli_status)?;
        json(&written)
    }

    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let query = crate::access_cmd::CheckQuery {
            subject: &r.subject,
            permission: &r.permission,
            object: &r.object,
            at: r.at,
        };
        let decision = crate::access_cmd::decide(&self.kernel, &task, &query)
            .await
            .map_err(cli_status)?;
        json(&decision)
    }

    async fn tuples(&self, req: Request<ZoneRef>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        json(&crate::access_cmd::tuple_rows(&self.kernel, &task).map_err(cli_status)?)
    }

    async fn revoke_token(&self, req: Request<TokenRef>) -> Result<Response<Empty>, Status> {
        // No zone named: the caller's token's zone.
        let zone = match req.get_ref().zone.as_str() {
            "" => self
                .kernel
                .verify_token(&Self::bearer(&req)?)
                .map_err(|e| Status::unauthenticated(e.to_string()))?
                .zone
                .to_string(),
            named => named.to_owned(),
        };
        let task = self.task(&req, &zone)?;
        self.kernel
            .revoke_token(&task, &req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn issue_token(&self, req: Request<IssueRequest>) -> Result<Response<JsonReply>, Status> {
        let issuer = self.acting(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let principal = (!r.principal.is_empty()).then_some(r.principal.as_str());
        let out =
            crate::access_cmd::issue(&self.kernel, &issuer, principal, &r.zone, &r.ttl, &r.caps)
                .map_err(cli_status)?;
        json(&out)
    }

    async fn verify_token(
        &self,
        req: Request<VerifyRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        // Any valid token may ask.
        self.kernel
            .verify_token(&Self::bearer(&req)?)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let claims = self
            .kernel
            .verify_token(&req.get_ref().token)
            .map_err(status)?;
        json(&claims)
    }

    async fn pipe_create(
        &self,
        req: Request<PipeCreateRequest>,
    ) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let capacity = crate::units::size(&r.capacity).map_err(cli_status)? as u64;
        self.kernel
            .mkpipe(&task, &r.path, capacity)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn pipe_stat(&self, req: Request<PathRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        json(
            &self
                .kernel
                .pipe_stat(&task, &req.get_ref().path)
                .map_err(status)?,
        )
    }

    async fn pipe_list(&self, req: Request<PathRequest>) -> Result<Response<JsonReply>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        json(
            &self
                .kernel
                .pipe_list(&task, &req.get_ref().path)
                .map_err(status)?,
        )
    }

    type PipeCatStream = ReceiverStream<Result<DataReply, Status>>;

    async fn pipe_cat(
        &self,
        req: Request<PipeCatRequest>,
    ) -> Result<Response<Self::PipeCatStream>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let kernel = self.kernel.clone();
        tokio::spawn(async move {
            let sent = crate::pipe_cmd::drain(&kernel, &task, &r.path, r.follow, |data| {
                let tx = tx.clone();
                async move {
                    tx.send(Ok(DataReply { data }))
                        .await
                        .map_err(|_| crate::error::CliError::Failed("the reader went away".into()))
                }
            })
            .await;
            if let Err(e) = sent {
                let _ = tx.send(Err(cli_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn pipe_remove(&self, req: Request<PathRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        crate::pipe_cmd::remove(&self.kernel, &task, &req.get_ref().path)
            .await
            .map_err(cli_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn mount(&self, req: Request<MountRequest>) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let target = ZoneId::new(&r.target).map_err(status)?;
        self.kernel
            .mount(&task, &r.path, &target)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }
}
