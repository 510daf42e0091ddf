//! Command-line arguments. Conventions follow docker and wasmtime: flags and
//! `NEXUS_*` variables, `--json` where the output is data.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nexus",
    version,
    about = "Nexus: a sandboxed runtime for AI agents, on a replicated kernel"
)]
pub struct Cli {
    /// Data directory (sled metadata, content, records).
    #[arg(long, env = "NEXUS_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Where file content lives: `local` (default), `memory`, or `s3://bucket/prefix`.
    #[arg(
        long,
        env = "NEXUS_OBJECT_STORE",
        global = true,
        default_value = "local"
    )]
    pub object_store: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Kernel(KernelCommand),
    /// Measure the kernel against raw sled and plain files (docs/benchmarks.md).
    Bench(BenchArgs),
}

/// Commands that work on the data directory's kernel.
#[derive(Subcommand)]
pub enum KernelCommand {
    /// Create, list, check and destroy zones.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Work with the files of a zone.
    #[command(subcommand)]
    Fs(FsCmd),
    /// Link another zone into a zone's tree as a DT_MOUNT entry.
    Mount {
        #[command(flatten)]
        zone: ZoneArg,
        /// Where the mount entry goes (must not exist).
        path: String,
        /// The zone it links to.
        target: String,
    },
    /// Delete content chunks that no zone references.
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// Write many files concurrently, printing `ack PATH HASH` as each one
    /// is durably committed (a load generator; crash tests use it).
    Stress(StressArgs),
}

#[derive(Args)]
pub struct BenchArgs {
    /// Directory for scratch data (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A tenth of the work, for a quick look.
    #[arg(long)]
    pub quick: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ZoneArg {
    /// The zone to work in.
    #[arg(long, short = 'z', env = "NEXUS_ZONE")]
    pub zone: String,
}

#[derive(Subcommand)]
pub enum ZoneCmd {
    /// Create a zone with an empty root directory.
    Create { name: String },
    /// List zones.
    List {
        #[arg(long)]
        json: bool,
    },
    /// fsck: check a zone's metadata against itself and its content.
    Check {
        name: String,
        /// Also re-hash every chunk.
        #[arg(long)]
        deep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Destroy a zone and its metadata (content goes at the next `nexus gc`).
    Destroy {
        name: String,
        /// Confirm: destruction cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum FsCmd {
    /// Copy a local file (or `-` for stdin) into the zone, atomically replacing DEST.
    Put {
        #[command(flatten)]
        zone: ZoneArg,
        src: String,
        dest: String,
    },
    /// Copy a zone file to a local file (or `-` for stdout).
    Get {
        #[command(flatten)]
        zone: ZoneArg,
        src: String,
        dest: String,
    },
    /// Print a zone file to stdout.
    Cat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Show an entry's metadata.
    Stat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a directory.
    Mkdir {
        #[command(flatten)]
        zone: ZoneArg,
        /// Create missing parents too; no error if it exists.
        #[arg(short, long)]
        parents: bool,
        path: String,
    },
    /// Remove a file, mount entry or (with -r, or when empty) a directory.
    Rm {
        #[command(flatten)]
        zone: ZoneArg,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        path: String,
    },
    /// Rename or move within a zone, replacing a compatible DEST.
    Mv {
        #[command(flatten)]
        zone: ZoneArg,
        from: String,
        to: String,
    },
}

#[derive(Args)]
pub struct StressArgs {
    #[command(flatten)]
    pub zone: ZoneArg,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "/stress")]
    pub dir: String,
    /// Files to write in all.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u64,
    /// Bytes per file.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
}
