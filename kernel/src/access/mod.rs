//! Access: identities and tasks, the ReBAC tuples and their evaluator, the
//! gate every operation passes, signed tokens, and the audit log.

pub mod audit;
pub mod gate;
pub mod identity;
pub mod rebac;
pub mod token;
