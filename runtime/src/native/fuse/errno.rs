//! The one mapping from kernel errors to the errno a native agent sees.

use fuser::Errno;
use nexus_kernel::{ErrorCode as K, KernelError};

pub fn errno(e: &KernelError) -> Errno {
    match e.code() {
        K::Access => Errno::EACCES,
        K::Busy => Errno::EBUSY,
        K::CrossDevice => Errno::EXDEV,
        K::Exist => Errno::EEXIST,
        K::FileTooLarge => Errno::EFBIG,
        K::Invalid => Errno::EINVAL,
        K::Io => Errno::EIO,
        K::IsDirectory => Errno::EISDIR,
        K::Loop => Errno::ELOOP,
        K::NameTooLong => Errno::ENAMETOOLONG,
        K::NoEntry => Errno::ENOENT,
        K::InsufficientSpace => Errno::ENOSPC,
        K::NotDirectory => Errno::ENOTDIR,
        K::NotEmpty => Errno::ENOTEMPTY,
        K::NotPermitted => Errno::EPERM,
        K::Quota => Errno::EDQUOT,
        K::Unsupported => Errno::EOPNOTSUPP,
        K::WouldBlock => Errno::EAGAIN,
        K::Pipe => Errno::EPIPE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_is_eacces_and_a_missing_file_enoent() {
        assert_eq!(errno(&KernelError::Access("no".into())), Errno::EACCES);
        assert_eq!(errno(&KernelError::NotFound("/x".into())), Errno::ENOENT);
        assert_eq!(errno(&KernelError::Exist("/x".into())), Errno::EEXIST);
    }
}
