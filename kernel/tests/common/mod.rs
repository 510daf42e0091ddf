//! Helpers shared by the kernel's integration tests.

use nexus_kernel::OpenOptions;

/// Open for reading and writing, creating the file if it is missing.
pub const CREATE: OpenOptions = OpenOptions {
    read: true,
    write: true,
    create: true,
    exclusive: false,
    truncate: false,
    directory: false,
};

/// Chunk files in the local content store of the data directory `home`.
pub fn count_chunks(home: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&home.join("content").join("chunks"))
}
