//! The operations layer's one error type: a kernel error (with its
//! `ErrorCode`) or a refusal of the request itself, each with the message,
//! exit code and hint every front-end gives for it.

use nexus_kernel::{ErrorCode, KernelError};

/// Exit codes of `nexus` (2 is clap's usage error).
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const NOT_FOUND: u8 = 3;
    pub const DENIED: u8 = 4;
    pub const CONFLICT: u8 = 5;
    /// An agent ran past `--timeout` (as with timeout(1)).
    pub const TIMEOUT: u8 = 124;
    /// A native run was interrupted (as a shell reports SIGINT).
    pub const INTERRUPTED: u8 = 130;
    /// An agent trapped or ran out of fuel.
    pub const KILLED: u8 = 125;
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("{path}: {source}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// The command ran and its answer is "no" (e.g. an inconsistent zone).
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Run(#[from] crate::agent::host::RunError),
    /// Cluster TLS material missing, unreadable or refused.
    #[error("TLS: {0}")]
    Tls(#[from] crate::node::tls::TlsError),
    #[error("{0}")]
    Native(#[from] crate::native::NativeError),
    /// `nexus check` answered "denied" (already printed).
    #[error("access denied")]
    Denied,
}

impl OpError {
    pub fn local(path: impl Into<String>, source: std::io::Error) -> Self {
        OpError::Local {
            path: path.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            OpError::Kernel(e) => match e.code() {
                ErrorCode::NoEntry => exit::NOT_FOUND,
                ErrorCode::Access | ErrorCode::NotPermitted => exit::DENIED,
                ErrorCode::Exist | ErrorCode::NotEmpty | ErrorCode::Busy => exit::CONFLICT,
                _ => exit::FAILURE,
            },
            OpError::Local { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                exit::NOT_FOUND
            }
            OpError::Local { .. } => exit::FAILURE,
            OpError::Usage(_) => 2,
            OpError::Failed(_) | OpError::Tls(_) => exit::FAILURE,
            OpError::Denied => exit::DENIED,
            OpError::Native(e) => match e {
                crate::native::NativeError::NoImage(_) => exit::NOT_FOUND,
                crate::native::NativeError::Timeout(_) => exit::TIMEOUT,
                crate::native::NativeError::Interrupted => exit::INTERRUPTED,
                crate::native::NativeError::NoCommand
                | crate::native::NativeError::HostThroughNode => 2,
                _ => exit::FAILURE,
            },
            OpError::Run(e) => match e {
                crate::agent::host::RunError::Read { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    exit::NOT_FOUND
                }
                crate::agent::host::RunError::Timeout(_) => exit::TIMEOUT,
                crate::agent::host::RunError::OutOfFuel
                | crate::agent::host::RunError::Trap(_)
                | crate::agent::host::RunError::AdapterAsserted(_) => exit::KILLED,
                _ => exit::FAILURE,
            },
        }
    }

    /// What to do about it, where there is something useful to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            OpError::Kernel(KernelError::ZoneNotFound(_)) => {
                Some("create it with `nexus zone create NAME`")
            }
            OpError::Kernel(KernelError::Busy(m)) if m.contains("in use by another") => {
                Some("wait for the other nexus command to finish, or point NEXUS_HOME elsewhere")
            }
            OpError::Kernel(KernelError::NotEmpty(_)) => {
                Some("use `nexus fs rm -r` to remove a directory and its contents")
            }
            OpError::Kernel(KernelError::Access(_)) => {
                Some("`nexus tuples` lists grants, `nexus grant` adds one, `nexus check` explains a decision")
            }
            OpError::Run(crate::agent::host::RunError::AdapterAsserted(_)) => Some(
                "a wasip1 module built with a wasi-libc from before 2023 (Debian 12's clang and \
                 wasi-libc among them) lets malloc take the memory the adapter set aside, then \
                 writes over it; rebuild it with a current toolchain (`python3 -m ziglang cc \
                 -target wasm32-wasi`, or wasi-sdk 19 or later) or for wasm32-wasip2. Stock \
                 wasmtime runs wasip1 modules without the adapter, which is why it does not fail \
                 there",
            ),
            OpError::Tls(_) => Some(
                "a cluster's TLS material comes from `nexus cluster ca` and `nexus cluster cert`; \
                 clients name the CA's certificate with --ca",
            ),
            _ => None,
        }
    }
}

pub type OpResult<T = ()> = Result<T, OpError>;
