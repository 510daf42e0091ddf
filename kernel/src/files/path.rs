//! Path and name validation. Paths are always relative to a zone root
//! (invariant 4): a leading `/` means "the zone root", never the host's.

use crate::error::{KernelError, Result};

/// Longest accepted path, in bytes (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest accepted name, in bytes (Linux NAME_MAX).
pub const MAX_NAME: usize = 255;

/// One step of a parsed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Name(&'a str),
    Parent,
}

/// Symbolic links followed in one resolution at most (Linux's MAXSYMLINKS);
/// past it, `loop`.
pub const MAX_LINKS_FOLLOWED: usize = 40;

/// Checks what a symbolic link may point to: any path `parse` accepts (an
/// absolute one is taken from the zone root when followed).
pub fn check_link_target(target: &str) -> Result<()> {
    parse(target).map(drop)
}

/// Splits a path into steps, dropping empty components and `.`.
/// `..` is kept as [`Step::Parent`]; the resolver decides what it means
/// (at the zone root it stays at the root).
pub fn parse(path: &str) -> Result<Vec<Step<'_>>> {
    if path.is_empty() {
        return Err(KernelError::Invalid("empty path".into()));
    }
    if path.len() > MAX_PATH {
        return Err(KernelError::NameTooLong(format!(
            "path of {} bytes exceeds {MAX_PATH}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(KernelError::Invalid("path contains a NUL byte".into()));
    }
    let mut steps = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => steps.push(Step::Parent),
            name => {
                check_name_len(name)?;
                steps.push(Step::Name(name));
            }
        }
    }
    Ok(steps)
}

/// Whether `path` can only name a directory: it ends in `/` or `/.`
/// (as on POSIX, `file/` is not the file but an error).
pub fn names_dir(path: &str) -> bool {
    path.len() > 1 && (path.ends_with('/') || path.ends_with("/."))
}

/// Refuses a `path` that ends in `/` (or `/.`) for an entry of `kind`
/// that is not a directory (a mount leads to one).
pub fn check_dir_suffix(path: &str, kind: crate::types::FileKind) -> Result<()> {
    use crate::types::FileKind;
    if names_dir(path) && !matches!(kind, FileKind::Dir | FileKind::Mount) {
        return Err(KernelError::NotDirectory(path.to_owned()));
    }
    Ok(())
}

fn check_name_len(name: &str) -> Result<()> {
    if name.len() > MAX_NAME {
        return Err(KernelError::NameTooLong(format!(
            "name of {} bytes exceeds {MAX_NAME}",
            name.len()
        )));
    }
    Ok(())
}

/// Validates a name that is about to be created in a directory.
pub fn check_new_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(KernelError::Invalid(format!(
            "{name:?} is not a valid name"
        )));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(KernelError::Invalid(format!(
            "name {name:?} contains '/' or NUL"
        )));
    }
    check_name_len(name)
}

/// Splits `path` into (parent path, final name). The final component must be
/// a plain name: `mkdir /a/..` is refused rather than guessed at.
pub fn split_parent(path: &str) -> Result<(&str, &str)> {
    parse(path)?;
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    check_new_name(name)?;
    // A name alone is in the directory the path starts from.
    let parent = match (parent.is_empty(), path.starts_with('/')) {
        (false, _) => parent,
        (true, true) => "/",
        (true, false) => ".",
    };
    Ok((parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_dots_and_empty_parts() {
        assert_eq!(
            parse("/a//./b/../c/").unwrap(),
            vec![
                Step::Name("a"),
                Step::Name("b"),
                Step::Parent,
                Step::Name("c")
            ]
        );
        assert_eq!(parse("/").unwrap(), vec![]);
    }

    #[test]
    fn a_trailing_slash_or_dot_names_a_directory() {
        use crate::types::FileKind;
        for p in ["a/", "/a/b/", "a/.", "/a/./"] {
            assert!(names_dir(p), "{p}");
            assert!(check_dir_suffix(p, FileKind::Regular).is_err(), "{p}");
            assert!(check_dir_suffix(p, FileKind::Dir).is_ok(), "{p}");
        }
        for p in ["/", "a", "/a/b", "a/.b", "."] {
            assert!(!names_dir(p), "{p}");
            assert!(check_dir_suffix(p, FileKind::Regular).is_ok(), "{p}");
        }
    }

    #[test]
    fn bad_paths_get_typed_errors() {
        assert!(matches!(parse(""), Err(KernelError::Invalid(_))));
        assert!(matches!(parse("/a\0b"), Err(KernelError::Invalid(_))));
        assert!(matches!(
            parse(&"a/".repeat(3000)),
            Err(KernelError::NameTooLong(_))
        ));
        assert!(matches!(
            parse(&format!("/{}", "n".repeat(256))),
            Err(KernelError::NameTooLong(_))
        ));
    }

    #[test]
    fn split_parent_requires_a_plain_final_name() {
        assert_eq!(split_parent("/a/b").unwrap(), ("/a", "b"));
        assert_eq!(split_parent("b").unwrap(), (".", "b"));
        assert_eq!(split_parent("/b").unwrap(), ("/", "b"));
        assert_eq!(split_parent("/a/b/").unwrap(), ("/a", "b"));
        assert!(split_parent("/a/..").is_err());
        assert!(split_parent("/").is_err());
        assert!(split_parent("/a/.").is_err());
    }
}
