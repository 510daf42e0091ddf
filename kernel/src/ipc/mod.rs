//! Inter-task I/O: DT_PIPE rings (live, in the node's memory) and the
//! timer driver.

pub mod pipe;
pub mod timer;
