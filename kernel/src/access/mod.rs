//! Access: identities and tasks, the ReBAC tuples and their evaluator, the
//! gate every operation passes, signed tokens, and the audit log.

pub(crate) mod audit;
pub(crate) mod egress;
pub(crate) mod forwarded;
pub(crate) mod gate;
pub(crate) mod host;
pub(crate) mod identity;
/// Public for its property test against a reference model.
pub mod rebac;
pub(crate) mod secret;
pub(crate) mod token;
