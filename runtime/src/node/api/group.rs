//! Zones across nodes: the calls one node coordinates with the others
//! (creating a zone on several nodes, adding and removing replicas,
//! destroying a zone everywhere) and the node-to-node calls they make.
//!
//! `JoinZone` and `LeaveZone` are between nodes only: the caller is the
//! node its certificate proves, never a token's holder, and each is
//! audited on the node that carries it out as `node:ID`. A coordinator
//! checks the user's authority before it asks any node to join, so a
//! refused request leaves no replica behind. `AddReplica` and
//! `RemoveReplica` forwarded to another member carry the caller's token,
//! so that member gates them as the caller.

use nexus_kernel::{Capabilities, Task};
use nexus_kernel::{MemberInfo, Role};
use nexus_kernel::{ReplicaId, ZoneId};
use nexus_proto::node::node_client::NodeClient;
use nexus_proto::node::{
    CreateZoneRequest, Empty, JoinZoneRequest, Membership, Replica, ReplicaChange, ZoneRef,
    ZoneReply,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{status, NodeApi};
use crate::node::server::certified_node;
use crate::node::tls::{self, Dialer, Peer};
use crate::node::transport::MAX_MESSAGE;
use crate::ops::wire;
use nexus_kernel::KernelError;

impl NodeApi {
    pub(super) async fn create_zone_across(
        &self,
        req: Request<CreateZoneRequest>,
    ) -> Result<Response<ZoneReply>, Status> {
        // The zone does not exist yet: the token's principal will own it.
        let claims = self.claims(&req, &req.get_ref().zone)?;
        if !claims.caps.contains(Capabilities::ALL) {
            return Err(status(KernelError::Access(
                "creating a zone needs a token with every capability".into(),
            )));
        }
        let mut r = req.into_inner();
        let me = self.kernel.node_id();
        // No replicas named: a zone on this node alone.
        if r.replicas.is_empty() {
            r.replicas.push(Replica {
                node: me,
                witness: false,
            });
        }
        let replicas = Self::replicas(&r.replicas);
        self.kernel
            .check_join(&claims.zone, &replicas, None)
            .map_err(status)?;
        // Every node is asked first, then every node joins: one refusal
        // leaves no replica behind.
        for check_only in [true, false] {
            for replica in r.replicas.iter().filter(|x| x.node != me) {
                let join = JoinZoneRequest {
                    zone: r.zone.clone(),
                    replicas: r.replicas.clone(),
                    owner: claims.principal.to_string(),
                    running: false,
                    witness: replica.witness,
                    check_only,
                };
                let mut peer = self.peer(replica.node).await?;
                peer.join_zone(join).await?;
            }
        }
        self.kernel
            .create_zone_on(&claims.principal, &claims.zone, replicas)
            .await
            .map_err(status)?;
        Ok(Response::new(ZoneReply {
            zone: r.zone,
            replicas: r.replicas,
            incarnation: 0,
        }))
    }

    /// A node asks this one to take a replica of a zone: one it is
    /// creating, or a running zone's group it is adding this node to.
    pub(super) async fn join_zone_for_peer(
        &self,
        req: Request<JoinZoneRequest>,
    ) -> Result<Response<ZoneReply>, Status> {
        let by = self.certified_peer(&req)?;
        let r = req.into_inner();
        let zone = ZoneId::new(&r.zone).map_err(status)?;
        let replicas = Self::replicas(&r.replicas);
        let role = r.running.then(|| Self::role(r.witness));
        if r.check_only {
            self.kernel
                .check_join(&zone, &replicas, role)
                .map_err(status)?;
            return Ok(Response::new(ZoneReply {
                zone: r.zone,
                replicas: r.replicas,
                incarnation: 0,
            }));
        }
        let joined = if r.running {
            self.kernel
                .join_running_zone(&zone, replicas, Self::role(r.witness))
                .await
        } else {
            self.kernel.join_zone(&zone, replicas).await
        };
        let outcome = if joined.is_ok() { "ok" } else { "refused" };
        self.kernel.audit_node(by, &zone, "join-zone", outcome);
        let record = joined.map_err(status)?;
        Ok(Response::new(ZoneReply {
            zone: r.zone,
            replicas: r.replicas,
            incarnation: record.incarnation,
        }))
    }

    pub(super) async fn destroy_zone_across(
        &self,
        req: Request<ZoneRef>,
    ) -> Result<Response<Empty>, Status> {
        let task = self.task(&req, &req.get_ref().zone)?;
        let zone = req.into_inner().zone;
        let me = self.kernel.node_id();
        self.kernel.may_destroy(&task).map_err(status)?;
        let group = self.kernel.zone_status(&task).await.map_err(status)?;
        for node in group
            .voters
            .iter()
            .chain(&group.learners)
            .filter(|n| **n != me)
        {
            self.kernel
                .remove_replica(&task, *node)
                .await
                .map_err(status)?;
            self.tell_to_leave(*node, &zone).await;
        }
        self.kernel.destroy_zone(&task).map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    pub(super) async fn add_replica_across(
        &self,
        req: Request<ReplicaChange>,
    ) -> Result<Response<Membership>, Status> {
        let (token, task, r, replica) = self.membership_request(req)?;
        // Refused before any node is asked to join: nothing is left behind.
        self.kernel.may_change_membership(&task).map_err(status)?;
        // Only the leader sees each replica's progress: it coordinates.
        let now = self.kernel.zone_status(&task).await.map_err(status)?;
        let me = self.kernel.node_id();
        if now.leader != me {
            if now.leader == 0 {
                return Err(status(KernelError::Unavailable(format!(
                    "zone {} has no leader right now; retry",
                    r.zone
                ))));
            }
            let mut leader = self.peer(now.leader).await?;
            return leader
                .add_replica(Self::forwarded(
                    ReplicaChange {
                        zone: r.zone,
                        replica: Some(replica),
                    },
                    &token,
                )?)
                .await;
        }
        if replica.node == me {
            return Err(status(KernelError::Exist(format!(
                "node {me} already serves zone {}",
                r.zone
            ))));
        }
        let record = self.kernel.zone_record(task.zone()).map_err(status)?;
        let join = JoinZoneRequest {
            zone: r.zone.clone(),
            replicas: record
                .replicas
                .iter()
                .map(|(node, role)| Replica {
                    node: *node,
                    witness: *role == Role::Witness,
                })
                .collect(),
            owner: String::new(),
            running: true,
            witness: replica.witness,
            check_only: false,
        };
        let mut peer = self.peer(replica.node).await?;
        let incarnation = match peer.join_zone(join).await {
            Ok(reply) => reply.into_inner().incarnation,
            // A replica left there earlier (its removal could not tell it
            // to go): it catches up like any other; which one it is, is
            // not known here.
            Err(s) if s.code() == tonic::Code::AlreadyExists => 0,
            Err(s) => return Err(s),
        };
        let info = MemberInfo {
            role: Self::role(replica.witness),
            incarnation,
        };
        self.kernel
            .add_replica(&task, replica.node, info)
            .await
            .map_err(status)?;
        let after = self.kernel.zone_status(&task).await.map_err(status)?;
        Self::membership_reply(after, None)
    }

    pub(super) async fn remove_replica_across(
        &self,
        req: Request<ReplicaChange>,
    ) -> Result<Response<Membership>, Status> {
        let (token, task, r, replica) = self.membership_request(req)?;
        let node = replica.node;
        let me = self.kernel.node_id();
        if node == me {
            // A removed replica may never learn that its removal committed:
            // another member coordinates.
            let now = self.kernel.zone_status(&task).await.map_err(status)?;
            let other = now
                .voters
                .iter()
                .copied()
                .find(|v| *v != me && !now.witnesses.contains(v))
                .ok_or_else(|| {
                    status(KernelError::Busy(format!(
                        "node {me} holds the last copy of zone {}'s state",
                        r.zone
                    )))
                })?;
            return self
                .peer(other)
                .await?
                .remove_replica(Self::forwarded(r, &token)?)
                .await;
        }
        self.kernel
            .remove_replica(&task, node)
            .await
            .map_err(status)?;
        // The removal has committed; the removed node deletes its copy.
        let warning = self.tell_to_leave(node, &r.zone).await;
        let after = self.kernel.zone_status(&task).await.map_err(status)?;
        Self::membership_reply(after, warning)
    }

    /// A client of peer `node`.
    async fn peer(&self, node: ReplicaId) -> Result<NodeClient<Channel>, Status> {
        let me = self.kernel.node_id();
        let addr = self.peers.get(&node).ok_or_else(|| {
            status(KernelError::Invalid(format!(
                "node {node} is not a peer of node {me}"
            )))
        })?;
        tls::channel(&Dialer::Node(self.tls.clone()), addr, &tls::node_name(node))
            .await
            .map(|c| {
                NodeClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            })
            .map_err(|e| status(KernelError::Unavailable(format!("node {node}: {e}"))))
    }

    /// `msg` as a request carrying the caller's token, for a peer.
    fn forwarded<T>(msg: T, token: &str) -> Result<Request<T>, Status> {
        let mut req = Request::new(msg);
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            status(KernelError::Invalid(
                "the token is not valid metadata".into(),
            ))
        })?;
        req.metadata_mut().insert("authorization", bearer);
        Ok(req)
    }

    /// A membership change's token (to forward), task, request and replica.
    fn membership_request(
        &self,
        req: Request<ReplicaChange>,
    ) -> Result<(String, Task, ReplicaChange, Replica), Status> {
        let token = Self::bearer(&req)?;
        let task = self.task(&req, &req.get_ref().zone)?;
        let r = req.into_inner();
        let replica = r
            .replica
            .ok_or_else(|| status(KernelError::Invalid("which replica?".into())))?;
        Ok((token, task, r, replica))
    }

    /// Asks `node`, just removed from `zone`, to delete its copy; the
    /// warning (also logged) if it could not be told.
    async fn tell_to_leave(&self, node: ReplicaId, zone: &str) -> Option<String> {
        let leave = ZoneRef {
            zone: zone.to_owned(),
        };
        let left = match self.peer(node).await {
            Ok(mut peer) => peer.leave_zone(leave).await.map(drop),
            Err(e) => Err(e),
        };
        let e = left.err()?;
        let warning = format!(
            "node {node} was removed from zone {zone} but could not be told to delete its copy \
             ({}); it no longer takes part in the group",
            e.message()
        );
        tracing::warn!("{warning}");
        Some(warning)
    }

    /// A node asks this one to delete its replica of a zone (it removed
    /// this node from the group).
    pub(super) async fn leave_zone_for_peer(
        &self,
        req: Request<ZoneRef>,
    ) -> Result<Response<Empty>, Status> {
        let by = self.certified_peer(&req)?;
        let zone = ZoneId::new(&req.get_ref().zone).map_err(status)?;
        self.kernel.leave_zone_for(&zone, by).map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    /// The node the request's connection is certified to come from, which
    /// must be one of this node's peers.
    fn certified_peer<T>(&self, req: &Request<T>) -> Result<ReplicaId, Status> {
        let by = certified_node(&self.tls, Peer::of(req))?;
        if !self.peers.contains_key(&by) {
            return Err(Status::permission_denied(format!(
                "node {by} is not a peer of node {}",
                self.kernel.node_id()
            )));
        }
        Ok(by)
    }

    fn membership_reply(
        status: nexus_kernel::ZoneStatus,
        warning: Option<String>,
    ) -> Result<Response<Membership>, Status> {
        let m = crate::ops::Membership { status, warning };
        Ok(Response::new(wire::membership(m)))
    }
}
