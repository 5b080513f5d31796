//! Matrix products on Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later): bf16
//! weights × bf16 activations with f32 accumulation in the tile unit. One `tdpbf16ps` multiplies
//! a 16×32 activation tile by a 32×16 weight tile (8,192 multiply-adds); on the 2-core
//! development VM a core sustains ~240 GMAC/s this way, about 5× what the AVX-512 VNNI int8
//! kernel reaches, and bf16 needs no scales: every value keeps its own exponent.
//!
//! Linux hands out the 8 KiB tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
//! once per process); [`available`] asks, and without a yes every product stays on the
//! AVX-512/AVX2 kernels. Rust has no stable AMX intrinsics, so the instructions are written as
//! inline assembly; tile registers are never touched by compiled code, so the state survives
//! between the `asm!` blocks of one task, and every task loads its own configuration and
//! releases the tiles when it ends.

use std::arch::asm;

/// Tokens and outputs per tile side; weights are packed in tiles of 16 outputs × 32 inputs.
pub(crate) const ROWS: usize = 16;
/// Inputs (bf16 values) per tile row: 64 bytes.
pub(crate) const DEPTH: usize = 32;
/// Tokens per block: two activation tiles share each weight tile.
pub(crate) const BLOCK: usize = 2 * ROWS;
/// bf16 values in one packed weight tile.
const TILE_VALUES: usize = ROWS * DEPTH;

/// Whether AMX-BF16 can be used: the CPU has it, the kernel grants the tile state, and
/// `BUNKO_EMBED_NO_AMX` is not set (to compare with the AVX-512 path).
pub(crate) fn available() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| std::env::var_os("BUNKO_EMBED_NO_AMX").is_none() && request())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn request() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permission to use
    // the tile state; a kernel without AMX support answers with an error.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request() -> bool {
    false
}

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A weight matrix (`rows` outputs × `cols` inputs) as bf16 in tile order: for each block of
/// 16 outputs, for each block of 32 inputs, a 16×32 tile whose row `i` holds, for each of the
/// 16 outputs, the input pair `2i, 2i + 1` (the pairwise layout `tdpbf16ps` reads).
pub struct Bf16Matrix {
    pub rows: usize,
    pub cols: usize,
    tiles: Vec<u16>,
}

impl Bf16Matrix {
    /// From row-major f32 weights; `None` unless `rows` is a multiple of 16 and `cols` of 32.
    pub fn from_f32(rows: usize, cols: usize, w: &[f32]) -> Option<Self> {
        if !rows.is_multiple_of(ROWS) || !cols.is_multiple_of(DEPTH) || w.len() != rows * cols {
            return None;
        }
        let kb = cols / DEPTH;
        let mut tiles = vec![0u16; rows * cols];
        for (n, row) in w.chunks_exact(cols).enumerate() {
            let (bn, j) = (n / ROWS, n % ROWS);
            for (k, &v) in row.iter().enumerate() {
                let (bk, kk) = (k / DEPTH, k % DEPTH);
                tiles[(bn * kb + bk) * TILE_VALUES + (kk / 2) * DEPTH + j * 2 + kk % 2] =
                    f32_to_bf16(v);
            }
        }
        Some(Self { rows, cols, tiles })
    }

    /// Matrices with the same input count, outputs one after another (Q, K and V as one).
    pub fn stack(parts: Vec<Self>) -> Option<Self> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        // Output blocks are independent, so the packed forms simply follow each other.
        let tiles = parts.into_iter().flat_map(|p| p.tiles).collect();
        Some(Self { rows, cols, tiles })
    }

    /// The weight at output `n`, input `k` (tests).
    #[cfg(test)]
    pub(crate) fn get(&self, n: usize, k: usize) -> f32 {
        let kb = self.cols / DEPTH;
        let (bn, j, bk, kk) = (n / ROWS, n % ROWS, k / DEPTH, k % DEPTH);
        let bits = self.tiles[(bn * kb + bk) * TILE_VALUES + (kk / 2) * DEPTH + j * 2 + kk % 2];
        f32::from_bits(u32::from(bits) << 16)
    }
}

/// The tile palette: eight tiles of 16 rows × 64 bytes (C0–C3 accumulators, A0–A1
/// activations, B0–B1 weights).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// The tile configuration of the running task; releases the tiles when dropped.
pub(crate) struct Tiles(());

impl Tiles {
    /// Loads the configuration on this thread. Only after [`available`] said yes.
    #[allow(unsafe_code)]
    pub(crate) fn load() -> Self {
        debug_assert!(available());
        let mut cfg = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = (DEPTH * 2) as u16;
            cfg.rows[t] = ROWS as u8;
        }
        // SAFETY: AMX is available and permitted (the caller checked `available`); the
        // configuration is a valid palette-1 layout, 64-byte aligned as `ldtilecfg` requires.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, preserves_flags)) };
        Tiles(())
    }

    /// The 32 tokens of `a` (32 rows of `k` bf16 values) times the 16 or 32 outputs of
    /// weight blocks `block`, `block + 1` (`pair`), plus `bias` (f32 per output, or zeros):
    /// four 16×16 f32 tiles — tokens 0–15 × outputs 0–15, 0–15 × 16–31, 16–31 × 0–15,
    /// 16–31 × 16–31 (the second and fourth only with `pair`) — stored at `out[0]`,
    /// `out[16]`, `out[16 · stride]`, `out[16 · stride + 16]`, rows `stride` floats apart.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    fn block(
        &self,
        w: &Bf16Matrix,
        a: &[u16],
        block: usize,
        pair: bool,
        bias: &[f32],
        out: &mut [f32],
        stride: usize,
    ) {
        let k = w.cols;
        let kb = k / DEPTH;
        let width = if pair { 2 * ROWS } else { ROWS };
        assert!(a.len() >= BLOCK * k && k.is_multiple_of(DEPTH));
        assert!((block * ROWS + width) * k <= w.tiles.len() && bias.len() >= width);
        assert!(out.len() >= (BLOCK - 1) * stride + width);
        let a0 = a.as_ptr();
        // SAFETY: rows 16..32 start `16 * k` values in; `a` holds `32 * k` (asserted).
        let a1 = unsafe { a0.add(ROWS * k) };
        let b0 = w.tiles[block * kb * TILE_VALUES..].as_ptr();
        let (bp, cp) = (bias.as_ptr(), out.as_mut_ptr());
        // SAFETY (all blocks below): the configuration is loaded (`self` exists); A tile
        // loads read 16 rows of 64 bytes `2k` bytes apart inside `a` (32 rows of `k` values),
        // B tiles 1 KiB inside `w.tiles`, the bias 64 bytes (stride 0: every row the same)
        // inside `bias`, all asserted above; stores write 16 rows of 64 bytes, `4 · stride`
        // bytes apart, inside `out` (asserted).
        unsafe {
            asm!(
                "tileloadd tmm0, [{b0} + {z}*1]",
                "tileloadd tmm2, [{b0} + {z}*1]",
                b0 = in(reg) bp,
                z = in(reg) 0usize,
                options(nostack, preserves_flags)
            );
            if pair {
                asm!(
                    "tileloadd tmm1, [{b1} + {z}*1]",
                    "tileloadd tmm3, [{b1} + {z}*1]",
                    b1 = in(reg) bp.add(ROWS),
                    z = in(reg) 0usize,
                    options(nostack, preserves_flags)
                );
            }
            for kk in 0..kb {
                let (x0, x1) = (a0.add(kk * DEPTH), a1.add(kk * DEPTH));
                let w0 = b0.add(kk * TILE_VALUES);
                if pair {
                    let w1 = b0.add((kb + kk) * TILE_VALUES);
                    asm!(
                        "tileloadd tmm4, [{x0} + {s}*1]",
                        "tileloadd tmm6, [{w0} + {t}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{w1} + {t}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{x1} + {s}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        x0 = in(reg) x0,
                        x1 = in(reg) x1,
                        w0 = in(reg) w0,
                        w1 = in(reg) w1,
                        s = in(reg) k * 2,
                        t = in(reg) DEPTH * 2,
                        options(nostack, preserves_flags)
                    );
                } else {
                    asm!(
                        "tileloadd tmm4, [{x0} + {s}*1]",
                        "tileloadd tmm6, [{w0} + {t}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{x1} + {s}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        x0 = in(reg) x0,
                        x1 = in(reg) x1,
                        w0 = in(reg) w0,
                        s = in(reg) k * 2,
                        t = in(reg) DEPTH * 2,
                        options(nostack, preserves_flags)
                    );
                }
            }
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c2} + {s}*1], tmm2",
                c0 = in(reg) cp,
                c2 = in(reg) cp.add(ROWS * stride),
                s = in(reg) stride * 4,
                options(nostack, preserves_flags)
            );
            if pair {
                asm!(
                    "tilestored [{c1} + {s}*1], tmm1",
                    "tilestored [{c3} + {s}*1], tmm3",
                    c1 = in(reg) cp.add(ROWS),
                    c3 = in(reg) cp.add(ROWS * stride + ROWS),
                    s = in(reg) stride * 4,
                    options(nostack, preserves_flags)
                );
            }
        }
    }
}

impl Drop for Tiles {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the configuration was loaded by `load`; releasing returns the tile state
        // to its initial (unused) form so context switches stop saving it.
        unsafe { asm!("tilerelease", options(nostack, preserves_flags)) };
    }
}

/// `y[t, n] = bias[n] + Σ_k a[t, k] · w[n, k]` for the `tokens` tokens starting at block
/// `first` (`a`: whole 32-token blocks of bf16 values, `w.cols` per token), outputs
/// `outputs` (multiples of 16) written at `out[(t − first·32) · stride + n − outputs.start]`.
/// Whole blocks are stored straight into `out`; a last partial block goes through a buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product(
    w: &Bf16Matrix,
    bias: Option<&[f32]>,
    a: &[u16],
    first: usize,
    tokens: usize,
    outputs: std::ops::Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let k = w.cols;
    let tiles = Tiles::load();
    let zeros = [0f32; 2 * ROWS];
    let mut part = Vec::new();
    for mb in 0..tokens.div_ceil(BLOCK) {
        let at = &a[(first + mb) * BLOCK * k..(first + mb + 1) * BLOCK * k];
        let valid = (tokens - mb * BLOCK).min(BLOCK);
        let mut n = outputs.start;
        while n < outputs.end {
            let pair = outputs.end - n >= 2 * ROWS;
            let width = if pair { 2 * ROWS } else { ROWS };
            let b = bias.map_or(&zeros[..], |b| &b[n..n + width]);
            let col = n - outputs.start;
            if valid == BLOCK {
                let o = &mut out[mb * BLOCK * stride + col..];
                tiles.block(w, at, n / ROWS, pair, b, o, stride);
            } else {
                part.resize(BLOCK * 2 * ROWS, 0.0);
                tiles.block(w, at, n / ROWS, pair, b, &mut part, 2 * ROWS);
                for t in 0..valid {
                    out[(mb * BLOCK + t) * stride + col..][..width]
                        .copy_from_slice(&part[t * 2 * ROWS..][..width]);
                }
            }
            n += width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Linear, QuantActs, matmul};

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn bf16(x: f32) -> f32 {
        f32::from_bits(u32::from(f32_to_bf16(x)) << 16)
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(-2.5), 0xc020);
        assert!(f32::from_bits(u32::from(f32_to_bf16(f32::NAN)) << 16).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn tile_order_keeps_every_weight() {
        let (rows, cols) = (48, 96);
        let w = values(rows * cols, 1);
        let m = Bf16Matrix::from_f32(rows, cols, &w).unwrap();
        for n in 0..rows {
            for k in 0..cols {
                assert_eq!(m.get(n, k), bf16(w[n * cols + k]), "({n}, {k})");
            }
        }
        assert!(Bf16Matrix::from_f32(40, 96, &values(40 * 96, 2)).is_none());
        assert!(Bf16Matrix::from_f32(48, 80, &values(48 * 80, 2)).is_none());
    }

    /// The tile product against the same bf16-rounded inputs multiplied in f64: whole and
    /// partial token blocks, an odd number of 16-output blocks (the single-block tail), with
    /// and without bias, one token (split by outputs) and many (split by tokens); Q, K and V
    /// stacked.
    #[test]
    fn tile_products_match_the_f64_product_of_the_rounded_values() {
        if !available() {
            eprintln!("SKIPPED: this CPU (or kernel) offers no AMX-BF16 tile unit");
            assert!(
                std::env::var_os("BUNKO_REQUIRE_AMX").is_none(),
                "AMX required"
            );
            return;
        }
        for (tokens, rows, cols, with_bias) in [
            (1, 48, 64, true),
            (7, 80, 96, false),
            (32, 64, 384, true),
            (45, 1152, 384, true),
            (200, 112, 1536, false),
        ] {
            let parts: Vec<Linear> = (0..rows / 16)
                .map(|p| {
                    let w = values(16 * cols, 10 + p as u64);
                    Linear::from_f32(16, cols, &w).unwrap()
                })
                .collect();
            let w = Linear::stack(parts).unwrap();
            let Linear::Bf16(m) = &w else {
                panic!("AMX is available, so the weights are bf16 tiles")
            };
            let x = values(tokens * cols, 99);
            let bias = values(rows, 7);
            let mut a = QuantActs::default();
            a.prepare(&w, &x);
            let mut y = vec![f32::NAN; tokens * rows];
            matmul(&w, with_bias.then_some(&bias[..]), &a, &mut y);
            for t in 0..tokens {
                for n in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|k| f64::from(bf16(x[t * cols + k])) * f64::from(m.get(n, k)))
                        .sum::<f64>()
                        + if with_bias { f64::from(bias[n]) } else { 0.0 };
                    let got = f64::from(y[t * rows + n]);
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{tokens}×{rows}×{cols} at ({t}, {n}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
