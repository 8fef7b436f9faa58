//! Finding (and when needed building) the `dogfs-meta` and `dogfs-chunk` executables.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for binaries of the package under test, and artifact
//! dependencies (`bindeps`) are unstable, so this crate cannot ask Cargo for another package's
//! binary. Instead, once per test process and binary:
//!
//! 1. `DOGFS_TEST_BIN_DIR` set: the binary must be in that directory (CI that built the
//!    binaries in an earlier step, or binaries from elsewhere). Nothing is built.
//! 2. Otherwise run `cargo build -p <package> --bin <name>` with the same Cargo (`$CARGO`),
//!    profile and target directory as the running test executable
//!    (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). When the binary is fresh
//!    this is a no-op taking well under a second; when the sources changed it rebuilds, so a
//!    test never runs yesterday's binary.
//! 3. If Cargo is not available (the test executable was started by hand), use the binary
//!    next to the test executable if it exists.
//!
//! A binary that cannot be found or built is an error naming the paths tried.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("cannot locate the target directory from the test executable: {0}")]
    NoTargetDir(String),
    #[error("`{command}` failed ({status}):\n{output}")]
    Build {
        command: String,
        status: String,
        output: String,
    },
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("executable {name} not found at {path} ({hint})")]
    Missing {
        name: String,
        path: PathBuf,
        hint: &'static str,
    },
}

/// The binaries the harness starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    Meta,
    Chunk,
    /// The `dogfs` command-line tool.
    Cli,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Meta => "dogfs-meta",
            Binary::Chunk => "dogfs-chunk",
            Binary::Cli => "dogfs",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Binary::Cli => "dogfs-cli",
            // Package and binary share their names.
            other => other.name(),
        }
    }
}

/// Built (or checked) once per test process: the test binaries of one crate share it.
static RESOLVED: Mutex<Option<HashMap<Binary, PathBuf>>> = Mutex::new(None);

/// The path of `bin`, building it first when Cargo is available (see the module docs).
pub fn path_of(bin: Binary) -> Result<PathBuf, BinError> {
    // Holding the lock while building makes concurrent tests wait for one build, not start
    // several.
    let mut guard = RESOLVED.lock().unwrap_or_else(PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&bin) {
        return Ok(p.clone());
    }
    let path = resolve(bin)?;
    map.insert(bin, path.clone());
    Ok(path)
}

fn resolve(bin: Binary) -> Result<PathBuf, BinError> {
    let exe_name = format!("{}{}", bin.name(), std::env::consts::EXE_SUFFIX);
    if let Some(dir) = std::env::var_os("DOGFS_TEST_BIN_DIR") {
        let path = PathBuf::from(dir).join(&exe_name);
        return exists(bin, path, "DOGFS_TEST_BIN_DIR is set, so nothing is built");
    }
    let (target_dir, profile_dir) = target_dirs()?;
    let path = profile_dir.join(&exe_name);
    match std::env::var_os("CARGO") {
        Some(cargo) => {
            build(&cargo, bin, &target_dir, &profile_dir)?;
            exists(bin, path, "cargo build succeeded but did not produce it")
        }
        None => exists(
            bin,
            path,
            "$CARGO is unset (not run by cargo test): build it with `cargo build -p dogfs-meta -p dogfs-chunk` or set DOGFS_TEST_BIN_DIR",
        ),
    }
}

fn exists(bin: Binary, path: PathBuf, hint: &'static str) -> Result<PathBuf, BinError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(BinError::Missing {
            name: bin.name().to_owned(),
            path,
            hint,
        })
    }
}

/// `target/` and `target/<profile>/` of the running test executable, which Cargo puts at
/// `target/<profile>/deps/<name>-<hash>`.
fn target_dirs() -> Result<(PathBuf, PathBuf), BinError> {
    let exe = std::env::current_exe().map_err(|e| BinError::NoTargetDir(e.to_string()))?;
    let deps = exe
        .parent()
        .ok_or_else(|| BinError::NoTargetDir(exe.display().to_string()))?;
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
    } else {
        Some(deps)
    }
    .ok_or_else(|| BinError::NoTargetDir(exe.display().to_string()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| BinError::NoTargetDir(exe.display().to_string()))?;
    Ok((target_dir.to_path_buf(), profile_dir.to_path_buf()))
}

fn build(
    cargo: &std::ffi::OsStr,
    bin: Binary,
    target_dir: &Path,
    profile_dir: &Path,
) -> Result<(), BinError> {
    // `debug` is the dev profile's directory; every other profile is named after itself.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--profile", profile, "-p"])
        .arg(bin.package())
        .args(["--bin", bin.name(), "--target-dir"])
        .arg(target_dir);
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| BinError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(BinError::Build {
        command,
        status: out.status.to_string(),
        output,
    })
}
