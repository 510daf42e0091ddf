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
    /// Audit record store: `postgres://…` or `sqlite://PATH` (default: SQLite in the data directory).
    #[arg(long, env = "NEXUS_RECORD_STORE", global = true)]
    pub record_store: Option<String>,
    /// Act as this principal (like `sudo -u`), e.g. `agent:bot`. For
    /// `token issue`, the principal the token is for.
    #[arg(long = "as", env = "NEXUS_AS", global = true, value_name = "PRINCIPAL")]
    pub as_principal: Option<String>,
    /// Act with the identity of a signed token (`nexus token issue`).
    #[arg(long, env = "NEXUS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Talk to this node (`host:port`) instead of the local data directory;
    /// needs `--token`. The connection is TLS, checked against `--ca`.
    #[arg(long, env = "NEXUS_NODE", global = true, value_name = "ADDR")]
    pub node: Option<String>,
    /// The cluster CA's certificate, which nodes' certificates must chain
    /// to (default: `tls/ca.crt` in the data directory).
    #[arg(long, env = "NEXUS_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Kernel(KernelCommand),
    /// Measure the kernel against raw sled and plain files (docs/benchmarks.md).
    Bench(BenchArgs),
    /// Run this data directory as a node of a cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The cluster's certificate authority: node certificates, revocation.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Token signing keys: this data directory's, and those it trusts.
    #[command(subcommand)]
    Issuer(IssuerCmd),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Build a Python agent into a component (with componentize-py).
    Build(BuildArgs),
    /// Compile agents into this data directory's cache ahead of their
    /// first run.
    Compile(CompileArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The agent's main module, e.g. `agent.py`; it defines its entry
    /// point with `@nexus_guest.main`. Modules beside it are included.
    pub agent: PathBuf,
    /// The component to write (default: the module's name with `.wasm`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// More directories of pure-Python packages to include (repeatable),
    /// e.g. one made with `pip install --target DIR requests`.
    #[arg(long = "path", value_name = "DIR")]
    pub paths: Vec<PathBuf>,
    /// componentize-py to use (default: on PATH, else where scripts/setup
    /// installs it).
    #[arg(long, env = "NEXUS_COMPONENTIZE_PY", value_name = "PATH")]
    pub componentize_py: Option<PathBuf>,
}

#[derive(Args)]
pub struct CompileArgs {
    /// Components or wasip1 modules.
    #[arg(required = true)]
    pub agents: Vec<PathBuf>,
    /// The linear memory the runs will ask for (`nexus run --memory`): the
    /// compiled code is specific to it.
    #[arg(long)]
    pub memory: Option<String>,
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Serve the Raft transport and the client API until interrupted.
    Start {
        /// This node's id (its replica id in every zone it serves).
        #[arg(long)]
        id: u64,
        /// Address to listen on, e.g. 127.0.0.1:2126.
        #[arg(long)]
        listen: String,
        /// The other nodes: `ID@HOST:PORT`, comma-separated.
        #[arg(long, env = "NEXUS_PEERS", value_delimiter = ',', default_value = "")]
        peers: Vec<String>,
        /// A witness node: in every zone it serves it votes and keeps the
        /// log, but holds no state and never leads (name it `Nw` in
        /// --replicas and add-replica).
        #[arg(long)]
        witness: bool,
        /// This node's TLS directory (`nexus cluster cert --out`):
        /// `node.crt`, `node.key`, `ca.crt`, `ca.crl`; re-read on SIGHUP.
        /// Default: `tls` in the data directory.
        #[arg(long, env = "NEXUS_TLS", value_name = "DIR")]
        tls: Option<PathBuf>,
        #[command(flatten)]
        runs: RunLimitArgs,
    },
}

/// What the agents clients run on a node may use, all clients together.
#[derive(clap::Args)]
pub struct RunLimitArgs {
    /// Agents running at once on this node, every client's together
    /// (at most 64).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_agents: usize,
    /// Agents running at once for one principal (a run's companions count).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_agents_per_principal: usize,
    /// Every run ends within this; a client asks for less with --timeout.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub run_timeout: String,
    /// Host memory (pipe rings, HTTP fields, directory listings) every
    /// running agent holds together; each agent's share is its --memory.
    #[arg(long, default_value = "4GiB", value_name = "SIZE")]
    pub agents_host_memory: String,
}

/// Tokens are signed where an issuer key is (the operator's machine:
/// `issuer.key` in its data directory) and verified by every node with the
/// public keys in its `issuers` file; a cluster node holds no signing key.
#[derive(Subcommand)]
pub enum IssuerCmd {
    /// Print this data directory's signing key's public half (`nxk1.…`)
    /// and key id, creating the key on first use.
    Show,
    /// Accept tokens signed by KEY (`nxk1.…`) in this data directory (a
    /// running node: after SIGHUP).
    Trust { key: String },
    /// Refuse tokens signed by KEY (its `nxk1.…` text or its key id) from
    /// now on (a running node: after SIGHUP); a retired key stays retired.
    Retire { key: String },
    /// Replace this data directory's signing key with a new one; the old
    /// one stays trusted here until retired.
    Rotate,
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Create the cluster's certificate authority in DIR (its key stays
    /// there: keep it off the nodes).
    Ca {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// How long the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue node ID's certificate into its TLS directory (with the CA's
    /// certificate and revocation list). Issuing again for the same node
    /// rotates its certificate: send the node SIGHUP, then revoke the old one.
    Cert {
        /// The CA directory (`nexus cluster ca --dir`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// The node's TLS directory to write (its `--tls`).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Further names or addresses the certificate is valid for.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// How long the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke a node certificate: it is refused by every node given the
    /// new revocation list (copy the CA's `ca.crl` into each node's TLS
    /// directory and send it SIGHUP), on new and open connections alike.
    Revoke {
        /// The CA directory (`nexus cluster ca --dir`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The certificate file to revoke.
        cert: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Show the newest records, optionally following new ones.
    Tail {
        #[arg(long, short = 'z')]
        zone: Option<String>,
        /// Keep printing records as they arrive.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the newest records to show first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        #[arg(long)]
        json: bool,
    },
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
    /// Create, inspect, read and remove pipes (DT_PIPE ring buffers).
    #[command(subcommand)]
    Pipe(PipeCmd),
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
    /// Run an agent (a wasm32-wasip2 component) as a task of a zone, with
    /// the kernel as its only I/O. Its identity is `agent:<file stem>`
    /// unless `--as` or `--token` says otherwise; it needs `enter` on the zone.
    /// `--with` runs more agents alongside it (e.g. a pipeline over a pipe).
    Run(RunArgs),
    /// Grant SUBJECT a RELATION on OBJECT: a path, `zone`, `group:NAME`, or
    /// a destination `host:NAME` (relation `fetch`: agents' HTTP requests).
    Grant(TupleArgs),
    /// Remove a grant made with `nexus grant`.
    Revoke(TupleArgs),
    /// Does SUBJECT have PERMISSION on OBJECT? Prints the proof.
    Check {
        #[command(flatten)]
        zone: ZoneArg,
        /// A principal, e.g. `agent:bot`.
        subject: String,
        /// read, write, enter, admin or fetch.
        permission: String,
        /// A path, `zone`, `group:NAME` or `host:NAME`.
        object: String,
        /// Answer as of at least this zone revision (from `grant`).
        #[arg(long)]
        at: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List a zone's relation tuples.
    Tuples {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(long)]
        json: bool,
    },
    /// Issue, inspect and revoke signed tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Credentials the kernel adds to agents' HTTP requests to a
    /// destination; no agent can read them.
    #[command(subcommand)]
    Secret(SecretCmd),
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
    /// The `guests/bench` component: adds the agent benchmarks (spawn, cold
    /// run, guest file I/O, pipes, timers, a node busy with agents).
    #[arg(long)]
    pub guest: Option<PathBuf>,
    /// The same guest built for wasm32-wasip1 (a core module): adds the
    /// write-path rows through the preview1 adapter.
    #[arg(long)]
    pub guest_p1: Option<PathBuf>,
    /// `guests/sqlite` built with componentize-py: adds the SQLite rows.
    #[arg(long)]
    pub guest_sqlite: Option<PathBuf>,
    /// `examples/fetch` built for wasm32-wasip2: adds the egress rows (an
    /// agent's HTTP requests through the kernel vs stock wasmtime-wasi-http).
    #[arg(long)]
    pub guest_fetch: Option<PathBuf>,
    /// A Docker image with python3 (`scripts/native-image`): adds the
    /// native-agent rows (zone through FUSE vs a plain bind mount).
    #[arg(long, value_name = "IMAGE")]
    pub native_image: Option<String>,
    /// Run only these groups (default: all): kernel, gate, agents, writes,
    /// pipes, busy, cluster, transfer, egress, native.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// The agent: a WebAssembly component (wasm32-wasip2, or Python built
    /// with `nexus build`) or a wasip1 core module. Omitted for a native
    /// agent (--image or --isolation host), whose command follows `--`.
    pub agent: Option<PathBuf>,
    /// Run a native agent in a container of this Docker image (isolation
    /// level 1): no network, a read-only root, no capabilities, and the
    /// zone at /mnt/nexus as its only mount.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["agent", "isolation", "with", "fuel"])]
    pub image: Option<String>,
    /// `host`: run the command after `--` as a host process in the zone
    /// mounted through FUSE (isolation level 0: weak, the process can do
    /// whatever its user can; embedded only).
    #[arg(long, value_name = "LEVEL", value_parser = ["host"], conflicts_with_all = ["agent", "with", "fuel"])]
    pub isolation: Option<String>,
    /// CPUs a container may use, e.g. 1.5 (--image).
    #[arg(long, requires = "image")]
    pub cpus: Option<f64>,
    #[command(flatten)]
    pub zone: ZoneArg,
    /// Environment variables for the agent (it sees no others).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Kill the agent after this long, e.g. 30s or 500ms.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Most linear memory the agent may use, e.g. 256MiB.
    #[arg(long)]
    pub memory: Option<String>,
    /// Deterministic instruction budget (fuel); the agent stops when it runs out.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Another agent to run at the same time, in the same zone and process,
    /// with its arguments: --with "consumer.wasm ARG...". Repeatable. Each
    /// is `agent:<its file stem>` unless --as or --token is given.
    #[arg(long = "with", value_name = "AGENT.wasm [ARGS]")]
    pub with: Vec<String>,
    /// Arguments for the agent, after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args)]
pub struct TupleArgs {
    #[command(flatten)]
    pub zone: ZoneArg,
    /// `user:NAME`, `agent:NAME`, `node:ID`, or a userset like `group:eng#member`.
    pub subject: String,
    /// owner, editor, viewer (member, for groups; fetch, for hosts).
    pub relation: String,
    /// A path in the zone, `zone` for the zone itself, `group:NAME`, or
    /// `host:api.example.com` (`*.example.com`, `http://10.0.0.5:8080`).
    pub object: String,
}

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Bind headers to DESTINATION (e.g. api.example.com, *.example.com,
    /// http://10.0.0.5:8080): every request an agent sends there carries
    /// them, replacing its own. Replaces the destination's earlier ones.
    Set {
        #[command(flatten)]
        zone: ZoneArg,
        destination: String,
        /// `Name: value`, e.g. 'Authorization: Bearer sk-…' (repeatable).
        #[arg(long = "header", short = 'H', required = true)]
        headers: Vec<String>,
    },
    /// Remove DESTINATION's secrets.
    Rm {
        #[command(flatten)]
        zone: ZoneArg,
        destination: String,
    },
    /// The destinations with secrets and their header names (never values).
    List {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Sign a token for the principal given with `--as` (default: you).
    Issue {
        #[command(flatten)]
        zone: ZoneArg,
        /// Lifetime: e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Capabilities the token carries: read,write,enter,admin,fetch or all.
        #[arg(long, default_value = "all")]
        caps: String,
        /// Other zones the holder may enter through mounts (comma-separated;
        /// the issuer needs admin on each). A token names its zones: a
        /// mount into any other zone is refused to its holder.
        #[arg(long, value_delimiter = ',')]
        reach: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a token and print what it grants, or why it is refused.
    Verify {
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; it is refused from the next use on. With
    /// --zone (needs admin on the zone): on every node serving the zone,
    /// through its log; without: on this node only (its operator).
    Revoke {
        id: String,
        #[arg(long, short = 'z')]
        zone: Option<String>,
    },
}

/// How a read is served.
#[derive(Args, Clone, Copy)]
pub struct ReadArg {
    /// See every write acknowledged before this read, on any node (waits
    /// for this replica to catch up with the leader's commit; ReadIndex).
    /// Without it, a read is served at once from the local replica.
    #[arg(long)]
    pub linearizable: bool,
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
    Create {
        name: String,
        /// With --node: the nodes whose replicas form the zone's Raft
        /// group, e.g. 1,2,3 (a `w` suffix makes a witness: 1,2,3w);
        /// without: that node alone.
        #[arg(long, value_delimiter = ',')]
        replicas: Vec<String>,
    },
    /// With --node: add a replica on node NODE (`4`, or `4w` for a
    /// witness) to the zone's group; it catches up as a learner, then votes.
    AddReplica { name: String, replica: String },
    /// With --node: remove node NODE's replica from the zone's group (if
    /// it leads, leadership moves first); that node deletes its copy.
    RemoveReplica {
        name: String,
        #[arg(value_name = "NODE")]
        member: u64,
    },
    /// Leader, term, commit and applied index, each replica's lag.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// What the zone holds (bytes of files and pipes, inodes) and its
    /// quota; --bytes and --inodes set the quota first (admin; `none`
    /// lifts a limit). Growth past it is refused with no-space.
    Quota {
        name: String,
        /// e.g. 10GiB, or none.
        #[arg(long, value_name = "SIZE")]
        bytes: Option<String>,
        /// Files, directories and pipes at most, or none.
        #[arg(long, value_name = "N")]
        inodes: Option<String>,
        #[arg(long)]
        json: bool,
    },
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
pub enum PipeCmd {
    /// Create a pipe holding at most CAPACITY bytes (1 B to 16 MiB).
    Create {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        /// e.g. 64KiB.
        #[arg(long, default_value = "64KiB")]
        capacity: String,
    },
    /// Capacity, occupancy, bytes in and out, attached readers and writers.
    Stat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Every pipe under DIR (recursively) with its state.
    Ls {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(default_value = "/")]
        dir: String,
        #[arg(long)]
        json: bool,
    },
    /// Read (and consume) the pipe's bytes to stdout.
    Cat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        /// Wait for more until every writer has closed, instead of stopping
        /// when the pipe is empty.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Remove a pipe. Its attached ends are woken and get `no-entry`.
    Rm {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
    },
}

#[derive(Subcommand)]
pub enum FsCmd {
    /// Copy a local file (or `-` for stdin) into the zone, atomically replacing DEST.
    Put {
        #[command(flatten)]
        zone: ZoneArg,
        /// SRC is a directory: copy the tree (files and directories; a
        /// symbolic link is reported, never followed out of SRC).
        #[arg(short = 'r', long)]
        recursive: bool,
        src: String,
        dest: String,
    },
    /// Copy a zone file (or a range of it) to a local file (or `-` for stdout).
    Get {
        #[command(flatten)]
        zone: ZoneArg,
        /// SRC is a zone directory: copy the tree into the local directory
        /// DEST (created if missing), never writing outside it.
        #[arg(short = 'r', long, conflicts_with_all = ["offset", "length"])]
        recursive: bool,
        src: String,
        dest: String,
        /// Start at this byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many bytes (default: to the end).
        #[arg(long)]
        length: Option<u64>,
        #[command(flatten)]
        read: ReadArg,
    },
    /// Print a zone file to stdout.
    Cat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        #[command(flatten)]
        read: ReadArg,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: ReadArg,
    },
    /// Show an entry's metadata.
    Stat {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: ReadArg,
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
    /// Give the file TARGET another name, LINK (a hard link: one file, its
    /// content and grants), or with `-s` make a symbolic link LINK to
    /// TARGET (an absolute TARGET is taken from the zone root).
    Ln {
        #[command(flatten)]
        zone: ZoneArg,
        #[arg(short = 's', long = "symbolic")]
        symbolic: bool,
        target: String,
        link: String,
    },
    /// Print what a symbolic link points to.
    Readlink {
        #[command(flatten)]
        zone: ZoneArg,
        path: String,
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
