//! Typed kernel errors and their one-to-one mapping onto WASI `error-code`s.
//!
//! Every fallible kernel call returns [`KernelError`]. Boundaries (WASI host,
//! gRPC, CLI) map it exactly once, through [`KernelError::code`].

use crate::types::ZoneId;

/// The guest-visible error code. Names and meanings follow
/// `wasi:filesystem/types.error-code`, so the WASI host maps them one-to-one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    Access,
    Busy,
    CrossDevice,
    Exist,
    FileTooLarge,
    Invalid,
    Io,
    IsDirectory,
    Loop,
    NameTooLong,
    NoEntry,
    InsufficientSpace,
    NotDirectory,
    NotEmpty,
    NotPermitted,
    Quota,
    Unsupported,
    WouldBlock,
    Pipe,
}

impl ErrorCode {
    /// The WASI spelling, e.g. `no-entry`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Access => "access",
            ErrorCode::Busy => "busy",
            ErrorCode::CrossDevice => "cross-device",
            ErrorCode::Exist => "exist",
            ErrorCode::FileTooLarge => "file-too-large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Io => "io",
            ErrorCode::IsDirectory => "is-directory",
            ErrorCode::Loop => "loop",
            ErrorCode::NameTooLong => "name-too-long",
            ErrorCode::NoEntry => "no-entry",
            ErrorCode::InsufficientSpace => "insufficient-space",
            ErrorCode::NotDirectory => "not-directory",
            ErrorCode::NotEmpty => "not-empty",
            ErrorCode::NotPermitted => "not-permitted",
            ErrorCode::Quota => "quota",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::WouldBlock => "would-block",
            ErrorCode::Pipe => "pipe",
        }
    }
}

/// Everything that can go wrong inside the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Exist(String),
    #[error("not a directory: {0}")]
    NotDirectory(String),
    #[error("is a directory: {0}")]
    IsDirectory(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    #[error("permission denied: {0}")]
    Access(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("name too long: {0}")]
    NameTooLong(String),
    #[error("file too large: {0}")]
    FileTooLarge(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("cross-zone rename is not supported: {0}")]
    CrossZone(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// The zone's quota (bytes or inodes) refuses the growth.
    #[error("no space left in the zone: {0}")]
    NoSpace(String),
    #[error("operation not supported: {0}")]
    Unsupported(String),
    #[error("broken pipe: {0}")]
    BrokenPipe(String),
    #[error("would block: {0}")]
    WouldBlock(String),
    #[error("unknown zone {0} (see `nexus zone list`)")]
    ZoneNotFound(ZoneId),
    #[error("zone {0} already exists")]
    ZoneExists(ZoneId),
    /// A concurrent writer changed the inode between read and commit; the
    /// proposer retries. Never surfaces past the VFS unless retries run out.
    #[error("write conflict on inode {0}, retries exhausted")]
    Conflict(u64),
    /// The zone could not commit: no leader, or the proposal was dropped.
    #[error("zone unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("content store error: {0}")]
    Content(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// Too many symbolic links followed, or one where none may be.
    #[error("too many levels of symbolic links: {0}")]
    Loop(String),
    /// A path resolved beneath a directory would leave it.
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
}

impl KernelError {
    /// The one mapping from a kernel error to a guest-visible code.
    pub fn code(&self) -> ErrorCode {
        match self {
            KernelError::NotFound(_) | KernelError::ZoneNotFound(_) => ErrorCode::NoEntry,
            KernelError::Exist(_) | KernelError::ZoneExists(_) => ErrorCode::Exist,
            KernelError::NotDirectory(_) => ErrorCode::NotDirectory,
            KernelError::IsDirectory(_) => ErrorCode::IsDirectory,
            KernelError::NotEmpty(_) => ErrorCode::NotEmpty,
            KernelError::Access(_) => ErrorCode::Access,
            KernelError::Invalid(_) => ErrorCode::Invalid,
            KernelError::NameTooLong(_) => ErrorCode::NameTooLong,
            KernelError::FileTooLarge(_) => ErrorCode::FileTooLarge,
            KernelError::Busy(_) | KernelError::Conflict(_) => ErrorCode::Busy,
            KernelError::CrossZone(_) => ErrorCode::CrossDevice,
            KernelError::Quota(_) => ErrorCode::Quota,
            KernelError::NoSpace(_) => ErrorCode::InsufficientSpace,
            KernelError::Unsupported(_) => ErrorCode::Unsupported,
            KernelError::BrokenPipe(_) => ErrorCode::Pipe,
            KernelError::WouldBlock(_) => ErrorCode::WouldBlock,
            KernelError::Loop(_) => ErrorCode::Loop,
            KernelError::NotPermitted(_) => ErrorCode::NotPermitted,
            KernelError::Unavailable(_)
            | KernelError::Storage(_)
            | KernelError::Content(_)
            | KernelError::Corrupt(_) => ErrorCode::Io,
        }
    }
}

/// Every kernel error by name, for carrying one across a boundary
/// (a node's answer) and rebuilding it exactly on the other side.
macro_rules! kinds {
    ($($variant:ident($t:ty) = $name:literal),* $(,)?) => {
        impl KernelError {
            /// The error's name, e.g. `not-found`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(KernelError::$variant(_) => $name,)*
                }
            }

            /// What the error names: a path, a zone, an inode, a reason.
            pub fn detail(&self) -> String {
                match self {
                    $(KernelError::$variant(d) => d.to_string(),)*
                }
            }

            /// The error named `kind` with `detail`; `None` for a name or
            /// a detail this version does not know.
            pub fn from_kind(kind: &str, detail: &str) -> Option<KernelError> {
                match kind {
                    $($name => detail.parse::<$t>().ok().map(KernelError::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    NotFound(String) = "not-found",
    Exist(String) = "exist",
    NotDirectory(String) = "not-directory",
    IsDirectory(String) = "is-directory",
    NotEmpty(String) = "not-empty",
    Access(String) = "access",
    Invalid(String) = "invalid",
    NameTooLong(String) = "name-too-long",
    FileTooLarge(String) = "file-too-large",
    Busy(String) = "busy",
    CrossZone(String) = "cross-zone",
    Quota(String) = "quota",
    NoSpace(String) = "no-space",
    Unsupported(String) = "unsupported",
    BrokenPipe(String) = "broken-pipe",
    WouldBlock(String) = "would-block",
    ZoneNotFound(ZoneId) = "zone-not-found",
    ZoneExists(ZoneId) = "zone-exists",
    Conflict(u64) = "conflict",
    Unavailable(String) = "unavailable",
    Storage(String) = "storage",
    Content(String) = "content",
    Corrupt(String) = "corrupt",
    Loop(String) = "loop",
    NotPermitted(String) = "not-permitted",
}

impl From<sled::Error> for KernelError {
    fn from(e: sled::Error) -> Self {
        KernelError::Storage(e.to_string())
    }
}

impl From<object_store::Error> for KernelError {
    fn from(e: object_store::Error) -> Self {
        KernelError::Content(e.to_string())
    }
}

impl From<std::io::Error> for KernelError {
    fn from(e: std::io::Error) -> Self {
        KernelError::Storage(e.to_string())
    }
}

impl From<postcard::Error> for KernelError {
    fn from(e: postcard::Error) -> Self {
        KernelError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filesystem_error_has_a_distinct_code() {
        let errs = [
            KernelError::NotFound("a".into()),
            KernelError::Exist("a".into()),
            KernelError::NotDirectory("a".into()),
            KernelError::IsDirectory("a".into()),
            KernelError::NotEmpty("a".into()),
            KernelError::Access("a".into()),
            KernelError::Invalid("a".into()),
            KernelError::NameTooLong("a".into()),
            KernelError::FileTooLarge("a".into()),
            KernelError::CrossZone("a".into()),
            KernelError::Quota("a".into()),
            KernelError::BrokenPipe("a".into()),
            KernelError::WouldBlock("a".into()),
            KernelError::Loop("a".into()),
            KernelError::NotPermitted("a".into()),
        ];
        let codes: std::collections::HashSet<_> = errs.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), errs.len());
        assert_eq!(
            KernelError::NotFound("x".into()).code().as_str(),
            "no-entry"
        );
    }

    #[test]
    fn every_error_is_rebuilt_from_its_name_and_detail() {
        let zone = ZoneId::new("z1").unwrap();
        let errs = [
            KernelError::NotFound("/a".into()),
            KernelError::Exist("/a".into()),
            KernelError::NotDirectory("/a".into()),
            KernelError::IsDirectory("/a".into()),
            KernelError::NotEmpty("/a".into()),
            KernelError::Access("no".into()),
            KernelError::Invalid("bad".into()),
            KernelError::NameTooLong("n".into()),
            KernelError::FileTooLarge("f".into()),
            KernelError::Busy("b".into()),
            KernelError::CrossZone("c".into()),
            KernelError::Quota("q".into()),
            KernelError::Unsupported("u".into()),
            KernelError::BrokenPipe("p".into()),
            KernelError::WouldBlock("w".into()),
            KernelError::NotPermitted("beneath".into()),
            KernelError::ZoneNotFound(zone.clone()),
            KernelError::ZoneExists(zone),
            KernelError::Conflict(42),
            KernelError::Unavailable("x".into()),
            KernelError::Storage("s".into()),
            KernelError::Content("c".into()),
            KernelError::Corrupt("c".into()),
        ];
        let names: std::collections::HashSet<_> = errs.iter().map(|e| e.kind()).collect();
        assert_eq!(names.len(), errs.len(), "names are distinct");
        for e in errs {
            assert_eq!(KernelError::from_kind(e.kind(), &e.detail()), Some(e));
        }
        assert_eq!(KernelError::from_kind("no-such-kind", "x"), None);
        assert_eq!(KernelError::from_kind("zone-exists", "bad/zone"), None);
        assert_eq!(KernelError::from_kind("conflict", "x"), None);
    }
}
