//! `nexus build agent.py -o agent.wasm`: a Python agent into a component,
//! with componentize-py, against the `command-agent` world of `wit/` and
//! with the Python SDK (`guests/python`, package `nexus_guest`).
//!
//! Why a subcommand and not a script in the repository: the WIT files and
//! the SDK travel inside the `nexus` binary, so building an agent needs
//! only `nexus` and componentize-py, not a checkout; and the command finds
//! componentize-py or says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::args::BuildArgs;
use crate::ops::{OpError, OpResult};
use crate::output::shown;

/// The WIT package agents are built against, as in `wit/`.
const WIT: &[(&str, &str)] = &[
    ("kernel.wit", include_str!("../../../wit/kernel.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    (
        "deps/cli-run.wit",
        include_str!("../../../wit/deps/cli-run.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../../../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

/// The Python SDK.
const SDK: &str = include_str!("../../../guests/python/nexus_guest/__init__.py");

/// The world a Python agent exports `wasi:cli/run` from.
const WORLD: &str = "command-agent";

/// The componentize-py version the SDK and the tests use.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";

pub fn run(args: BuildArgs) -> OpResult {
    let agent = &args.agent;
    let module = module_name(agent)?;
    let dir = match agent.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !agent.is_file() {
        return Err(OpError::local(
            shown(&agent.display().to_string()),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join(format!("{module}.wasm")));
    let tool = find_componentize_py(args.componentize_py.as_deref())?;
    let staged = tempfile::tempdir().map_err(|e| OpError::local("temporary directory", e))?;
    let wit = staged.path().join("wit");
    let sdk = staged.path().join("python");
    for (name, text) in WIT {
        write(&wit.join(name), text)?;
    }
    write(&sdk.join("nexus_guest").join("__init__.py"), SDK)?;
    eprintln!(
        "nexus: building {} with {} (a 20 MB component: CPython and your code)",
        shown(&agent.display().to_string()),
        tool.display()
    );
    for p in &args.paths {
        if !p.is_dir() {
            return Err(OpError::Usage(format!(
                "--path {}: not a directory",
                shown(&p.display().to_string())
            )));
        }
    }
    let status = Command::new(&tool)
        .arg("-q")
        .arg("-d")
        .arg(&wit)
        .args(["-w", WORLD, "componentize", &module])
        .arg("-p")
        .arg(&dir)
        .arg("-p")
        .arg(&sdk)
        .args(
            args.paths
                .iter()
                .flat_map(|p| [std::ffi::OsStr::new("-p"), p.as_os_str()]),
        )
        .arg("-o")
        .arg(&output)
        .status()
        .map_err(|e| OpError::local(tool.display().to_string(), e))?;
    if !status.success() {
        return Err(OpError::Failed(format!(
            "componentize-py could not build {} ({status}); its message is above. An agent \
             defines its entry point with `@nexus_guest.main` and does its work there, not at \
             module level (the module is run once at build time)",
            shown(&agent.display().to_string())
        )));
    }
    let size = std::fs::metadata(&output).map_or(0, |m| m.len());
    println!(
        "built {} ({:.1} MB); run it with: nexus run {} --zone ZONE",
        output.display(),
        size as f64 / 1e6,
        output.display()
    );
    Ok(())
}

/// `agent.py` → `agent`, which must be an importable module name.
fn module_name(agent: &Path) -> OpResult<String> {
    let ok = agent.extension().is_some_and(|e| e == "py");
    let stem = agent.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let identifier = stem
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok && identifier {
        Ok(stem.to_owned())
    } else {
        Err(OpError::Usage(format!(
            "{}: give a Python module, NAME.py, whose NAME is a Python identifier",
            shown(&agent.display().to_string())
        )))
    }
}

fn write(path: &Path, text: &str) -> OpResult {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| OpError::local(parent.display().to_string(), e))?;
    }
    std::fs::write(path, text).map_err(|e| OpError::local(path.display().to_string(), e))
}

/// The flag (or `NEXUS_COMPONENTIZE_PY`), else `componentize-py` on PATH,
/// else where `scripts/setup` installs it.
fn find_componentize_py(given: Option<&Path>) -> OpResult<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("componentize-py"))
            .find(|p| p.is_file())
    });
    let setup = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/nexus-py/bin/componentize-py"))
        .filter(|p| p.is_file());
    on_path.or(setup).ok_or_else(|| {
        OpError::Usage(format!(
            "componentize-py not found: install it with `pip install {COMPONENTIZE_PY}` (or \
             run scripts/setup), or name it with --componentize-py"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_name_is_a_python_identifier() {
        assert_eq!(
            module_name(Path::new("dir/my_agent.py")).unwrap(),
            "my_agent"
        );
        for bad in ["agent", "my-agent.py", "1agent.py", "agent.txt", ".py"] {
            assert!(module_name(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_embedded_wit_names_the_command_world() {
        assert!(WIT[0].1.contains(&format!("world {WORLD}")));
        assert!(SDK.contains("def main("));
    }
}
