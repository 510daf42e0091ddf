//! Nexus's gRPC protocols, generated from `proto/nexus/*.proto`.

/// The Raft transport between nodes (`nexus.transport.v1`).
pub mod transport {
    tonic::include_proto!("nexus.transport.v1");
}

/// The client API of a node (`nexus.node.v1`).
pub mod node {
    tonic::include_proto!("nexus.node.v1");
}
