//! The arithmetic: 4-bit weight × 8-bit activation matrix products, attention, layer norm,
//! GELU.
//!
//! A weight matrix keeps the file's `Q4_0` blocks (32 weights, one f16 scale) unpacked to one
//! byte per weight holding the stored nibble `w + 8`, with an f32 scale per block.
//! Activations are quantised per 32-value block to int8 with their own scale, so each block
//! contributes `scale_w · scale_a · Σ nibble·a − 8 · scale_w · scale_a · Σ a`, the sums in exact
//! integer arithmetic — the scheme of llama.cpp's `Q4_0 × Q8_0`. Loops are written for the
//! compiler to vectorise; on x86-64 the hot ones also exist as AVX2 code chosen at run time
//! when the CPU has it (the only `unsafe` in bunko: the dispatch and two unaligned loads).

use crate::format::QK;
/// IEEE 754 half → f32 (exact), beside [`f32_to_f16`].
pub use crate::format::f16_to_f32;
use rayon::prelude::*;

/// A `rows × cols` matrix of 4-bit weights (row-major, rows = outputs), one byte per weight
/// holding the stored nibble `w + 8` (0..=15), and an f32 scale per 32-weight block.
pub struct Q4Matrix {
    pub rows: usize,
    pub cols: usize,
    q: Vec<u8>,
    d: Vec<f32>,
}

impl Q4Matrix {
    /// From `Q4_0` blocks: per block an f16 scale, then 16 bytes whose low nibbles are weights
    /// 0..16 and high nibbles weights 16..32, each stored as `w + 8`.
    pub fn from_q4_0(rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        if !Self::fits(rows, cols, raw) {
            return None;
        }
        let mut q = Vec::with_capacity(rows * cols);
        let mut d = Vec::with_capacity(rows * cols / QK);
        for block in raw.chunks_exact(18) {
            d.push(f16_to_f32(u16::from_le_bytes([block[0], block[1]])));
            let nib = &block[2..];
            q.extend(nib.iter().map(|&b| b & 0x0f));
            q.extend(nib.iter().map(|&b| b >> 4));
        }
        Some(Self { rows, cols, q, d })
    }

    /// Whether `raw` holds `rows × cols` weights as `Q4_0` blocks.
    fn fits(rows: usize, cols: usize, raw: &[u8]) -> bool {
        cols.is_multiple_of(QK) && raw.len() == rows * cols / QK * 18
    }
}

/// A `rows × cols` matrix quantised from f32 on load: int8 weights with one f32 scale per row
/// (stored per 32-weight block, every block of a row alike, so every kernel reads it as
/// `Q8_0`): the form Hugging Face (f32/f16/bf16) weights run in without AMX. With activations
/// scaled per 128 values ([`QuantActs::quantize_grouped`]) the AVX-512 VNNI kernel sums each
/// group's products in integers before one conversion. Minimum cosine with sentence-transformers on
/// the reference texts: 0.9985 (per-32 scales on both sides: 0.9994).
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    /// The weights again for the AVX-512 VNNI kernel, 16 rows per register: per block of 16
    /// rows, per 4 columns, 64 bytes whose lane `j` holds row `j`'s 4 weights. Empty unless
    /// the CPU has VNNI, `rows` is a multiple of 16 and `cols` of 128.
    packed: Vec<i8>,
    /// Per block of 16 rows and 128-column group, per row: −128 × the row's weights' sum in
    /// the group (the `q + 128` correction, one lane per row).
    packed_corr: Vec<i32>,
    /// Per row: its scale (read 16 at a time by the packed kernel).
    row_scale: Vec<f32>,
}

/// The packed form of row-major int8 weights ([`Q8Matrix::packed`]) and its corrections.
fn pack_rows(rows: usize, cols: usize, q: &[i8]) -> (Vec<i8>, Vec<i32>) {
    if !has_vnni() || !rows.is_multiple_of(16) || !cols.is_multiple_of(GROUP) {
        return (Vec::new(), Vec::new());
    }
    let (quads, groups) = (cols / 4, cols / GROUP);
    let mut packed = vec![0i8; rows * cols];
    let mut corr = vec![0i32; rows * groups];
    for r in 0..rows {
        let (rb, j) = (r / 16, r % 16);
        for c in 0..cols {
            let w = q[r * cols + c];
            packed[(rb * quads + c / 4) * 64 + j * 4 + c % 4] = w;
            corr[(rb * groups + c / GROUP) * 16 + j] -= 128 * i32::from(w);
        }
    }
    (packed, corr)
}

/// Activation values sharing one scale in the grouped form.
pub const GROUP: usize = 128;

impl Q8Matrix {
    pub fn from_f32(rows: usize, cols: usize, w: &[f32]) -> Option<Self> {
        if !cols.is_multiple_of(QK) || w.len() != rows * cols {
            return None;
        }
        let mut q = Vec::with_capacity(w.len());
        let mut d = Vec::with_capacity(w.len() / QK);
        for row in w.chunks_exact(cols) {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            q.extend(
                row.iter()
                    .map(|v| round_even(v * inv).clamp(-127.0, 127.0) as i8),
            );
            d.extend(std::iter::repeat_n(scale, cols / QK));
        }
        let (packed, packed_corr) = pack_rows(rows, cols, &q);
        let row_scale = d.iter().step_by(cols / QK).copied().collect();
        Some(Self {
            rows,
            cols,
            q,
            d,
            packed,
            packed_corr,
            row_scale,
        })
    }
}

/// A weight matrix in one of the quantised forms the kernels multiply.
pub enum Linear {
    Q4(Q4Matrix),
    Q8(Q8Matrix),
    /// bf16 in AMX tile order (only built when [`amx_available`]).
    #[cfg(target_arch = "x86_64")]
    Bf16(crate::amx::Bf16Matrix),
}

/// Which unit runs the matrix products on this CPU: `amx-bf16`, `avx512-vnni`, `avx2` or
/// `portable` (for logs and benchmark reports).
pub fn product_unit() -> &'static str {
    if amx_available() {
        "amx-bf16"
    } else if has_vnni() {
        "avx512-vnni"
    } else if has_avx2() {
        "avx2"
    } else {
        "portable"
    }
}

/// Whether the CPU's AMX tile unit can be used (see [`Linear::from_f32`]).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Linear {
    /// Hugging Face (f32/f16/bf16) weights in the fastest form the CPU runs: bf16 tiles when
    /// it has AMX (and the shape fits its tiles), else int8 with row scales.
    pub fn from_f32(rows: usize, cols: usize, w: &[f32]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if amx_available()
            && let Some(m) = crate::amx::Bf16Matrix::from_f32(rows, cols, w)
        {
            return Some(Linear::Bf16(m));
        }
        Q8Matrix::from_f32(rows, cols, w).map(Linear::Q8)
    }

    /// `Q4_0` blocks (the E5S1 file's form): as they are, or — with AMX — dequantised (exactly,
    /// in f32) and rounded to bf16 tiles.
    pub fn from_q4_0(rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if amx_available() && Q4Matrix::fits(rows, cols, raw) {
            let row_bytes = cols / QK * 18;
            let mut w = vec![0f32; rows * cols];
            for (r, out) in w.chunks_exact_mut(cols).enumerate() {
                dequantize_q4_0_row(&raw[r * row_bytes..(r + 1) * row_bytes], out);
            }
            if let Some(b) = crate::amx::Bf16Matrix::from_f32(rows, cols, &w) {
                return Some(Linear::Bf16(b));
            }
        }
        Q4Matrix::from_q4_0(rows, cols, raw).map(Linear::Q4)
    }

    pub fn rows(&self) -> usize {
        match self {
            Linear::Q4(m) => m.rows,
            Linear::Q8(m) => m.rows,
            #[cfg(target_arch = "x86_64")]
            Linear::Bf16(m) => m.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Linear::Q4(m) => m.cols,
            Linear::Q8(m) => m.cols,
            #[cfg(target_arch = "x86_64")]
            Linear::Bf16(m) => m.cols,
        }
    }

    /// Stacks matrices of one form and column count (Q, K and V become one product).
    pub fn stack(parts: Vec<Self>) -> Option<Self> {
        let cols = parts.first()?.cols();
        if parts.iter().any(|p| p.cols() != cols) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(parts[0], Linear::Bf16(_)) {
            let mats = parts
                .into_iter()
                .map(|p| match p {
                    Linear::Bf16(m) => Some(m),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            return crate::amx::Bf16Matrix::stack(mats).map(Linear::Bf16);
        }
        let rows = parts.iter().map(Linear::rows).sum();
        let (mut q4, mut q8, mut d) = (Vec::new(), Vec::new(), Vec::new());
        let (mut packed, mut packed_corr, mut row_scale) = (Vec::new(), Vec::new(), Vec::new());
        // Row blocks are independent, so packed parts simply follow each other.
        let all_packed = parts
            .iter()
            .all(|p| matches!(p, Linear::Q8(m) if !m.packed.is_empty()));
        let q4_form = matches!(parts[0], Linear::Q4(_));
        for p in parts {
            match (p, q4_form) {
                (Linear::Q4(m), true) => {
                    q4.extend(m.q);
                    d.extend(m.d);
                }
                (Linear::Q8(m), false) => {
                    q8.extend(m.q);
                    d.extend(m.d);
                    row_scale.extend(m.row_scale);
                    if all_packed {
                        packed.extend(m.packed);
                        packed_corr.extend(m.packed_corr);
                    }
                }
                _ => return None,
            }
        }
        Some(if q4_form {
            Linear::Q4(Q4Matrix {
                rows,
                cols,
                q: q4,
                d,
            })
        } else {
            Linear::Q8(Q8Matrix {
                rows,
                cols,
                q: q8,
                d,
                packed,
                packed_corr,
                row_scale,
            })
        })
    }
}

/// Dequantises one `Q4_0` row (e.g. a token's embedding) into `out`.
pub fn dequantize_q4_0_row(raw: &[u8], out: &mut [f32]) {
    for (block, o) in raw.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        for (j, &b) in block[2..].iter().enumerate() {
            o[j] = f32::from((b & 0x0f) as i8 - 8) * d;
            o[j + 16] = f32::from((b >> 4) as i8 - 8) * d;
        }
    }
}

/// Activations quantised per 32-value block: `tokens × cols` int8 values, and per block its
/// scale and `8 · scale · Σ a` (what the `+ 8` offset of the stored weights adds).
#[derive(Default)]
pub struct QuantActs {
    cols: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    offset: Vec<f32>,
    /// Blocks sharing a scale: 1, or `GROUP / QK` for the grouped form (then `u` holds
    /// `q + 128` for the VNNI kernel).
    group: usize,
    u: Vec<u8>,
    /// bf16 activations for [`Linear::Bf16`], rows padded to whole 32-token blocks.
    bf: Vec<u16>,
}

/// Round half to even, for |x| < 2^22 (scaled activations are within ±127.5): adding and
/// subtracting 1.5·2^23 leaves no fraction bits. Inline arithmetic instead of a libm call.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

impl QuantActs {
    /// Puts `x` (`tokens × w.cols()`) in the form `w`'s kernel multiplies: bf16 for AMX tiles,
    /// int8 scaled per 128 values for row-scaled int8 weights whose width allows it, else
    /// int8 per 32-value block.
    pub fn prepare(&mut self, w: &Linear, x: &[f32]) {
        let cols = w.cols();
        match w {
            #[cfg(target_arch = "x86_64")]
            Linear::Bf16(_) => self.to_bf16(x, cols),
            Linear::Q8(_) if cols.is_multiple_of(GROUP) => self.quantize_grouped(x, cols),
            _ => self.quantize(x, cols),
        }
    }

    /// `x` rounded to bf16, with zero rows up to a whole number of 32-token blocks.
    #[cfg(target_arch = "x86_64")]
    pub fn to_bf16(&mut self, x: &[f32], cols: usize) {
        let tokens = x.len() / cols;
        let padded = tokens.div_ceil(crate::amx::BLOCK) * crate::amx::BLOCK;
        self.cols = cols;
        self.bf.resize(padded * cols, 0);
        self.bf[tokens * cols..].fill(0);
        self.bf[..tokens * cols]
            .par_chunks_mut(16 * 1024)
            .zip(x.par_chunks(16 * 1024))
            .for_each(|(b, x)| {
                for (b, &v) in b.iter_mut().zip(x) {
                    *b = crate::amx::f32_to_bf16(v);
                }
            });
        self.q.clear();
    }

    /// Quantises `x` (`tokens × cols`, row-major) into `self`, reusing its buffers.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        self.cols = cols;
        self.q.resize(x.len(), 0);
        self.d.resize(x.len() / QK, 0.0);
        self.offset.resize(x.len() / QK, 0.0);
        self.q
            .par_chunks_mut(QK * 64)
            .zip(self.d.par_chunks_mut(64))
            .zip(self.offset.par_chunks_mut(64))
            .zip(x.par_chunks(QK * 64))
            .for_each(|(((q, d), off), x)| quantize_chunk(q, d, off, x));
        self.group = 1;
    }

    /// Like [`QuantActs::quantize`], with one scale per `GROUP` values (kept per block too, so
    /// every kernel reads it), for matrices with row scales.
    pub fn quantize_grouped(&mut self, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(GROUP) && x.len().is_multiple_of(cols));
        let per = GROUP / QK;
        self.cols = cols;
        self.group = per;
        self.q.resize(x.len(), 0);
        self.u.resize(x.len(), 0);
        self.d.resize(x.len() / QK, 0.0);
        self.offset.resize(x.len() / QK, 0.0);
        self.q
            .par_chunks_mut(GROUP)
            .zip(self.u.par_chunks_mut(GROUP))
            .zip(self.d.par_chunks_mut(per))
            .zip(self.offset.par_chunks_mut(per))
            .zip(x.par_chunks(GROUP))
            .for_each(|((((q, u), d), off), x)| {
                #[cfg(target_arch = "x86_64")]
                if x.len() == GROUP && crate::avx512::available() {
                    #[allow(unsafe_code)]
                    // SAFETY: the CPU has AVX-512 F and BW (checked just above).
                    let (scale, sums) = unsafe { crate::avx512::quantize_group(x, q, u) };
                    for ((d, off), sum) in d.iter_mut().zip(off.iter_mut()).zip(sums) {
                        *d = scale;
                        *off = 8.0 * scale * sum as f32;
                    }
                    return;
                }
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                for (k, (((q, u), x), off)) in q
                    .chunks_mut(QK)
                    .zip(u.chunks_mut(QK))
                    .zip(x.chunks(QK))
                    .zip(off.iter_mut())
                    .enumerate()
                {
                    let mut sum = 0i32;
                    for ((q, u), &v) in q.iter_mut().zip(u.iter_mut()).zip(x) {
                        *q = round_even(v * inv).clamp(-128.0, 127.0) as i8;
                        *u = (*q as u8) ^ 0x80;
                        sum += i32::from(*q);
                    }
                    d[k] = scale;
                    *off = 8.0 * scale * sum as f32;
                }
            });
    }
}

fn quantize_chunk(q: &mut [i8], d: &mut [f32], off: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2::quantize_chunk(q, d, off, x) };
    }
    quantize_chunk_generic(q, d, off, x);
}

#[inline(always)]
fn quantize_chunk_generic(q: &mut [i8], d: &mut [f32], off: &mut [f32], x: &[f32]) {
    let blocks = q.chunks_mut(QK).zip(d.iter_mut()).zip(off.iter_mut());
    for (((q, d), off), x) in blocks.zip(x.chunks(QK)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(x) {
            *q = round_even(v * inv).clamp(-128.0, 127.0) as i8;
            sum += i32::from(*q);
        }
        *d = scale;
        *off = 8.0 * scale * sum as f32;
    }
}

/// Tokens per register tile: each weight block is loaded once and used for this many tokens.
const TILE: usize = 4;

/// `y[t, r] = bias[r] + Σ_c a[t, c] · w[r, c]` for every token `t` and output row `r`.
/// Work is split by token ranges, small enough that a single short text still uses every core.
pub fn matmul(w: &Linear, bias: Option<&[f32]>, a: &QuantActs, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Linear::Bf16(w) = w {
        return bf16_matmul(w, bias, a, y);
    }
    let (rows_n, cols) = (w.rows(), w.cols());
    debug_assert_eq!(a.cols, cols);
    let tokens = a.q.len() / cols;
    debug_assert_eq!(y.len(), tokens * rows_n);
    let threads = rayon::current_num_threads().max(1);
    let per_task = (tokens / (4 * threads)).clamp(1, 64);
    let nb = cols / QK;
    y.par_chunks_mut(per_task * rows_n)
        .enumerate()
        .for_each(|(i, y)| {
            let t0 = i * per_task;
            let n = y.len() / rows_n;
            let acts = Acts {
                q: &a.q[t0 * cols..(t0 + n) * cols],
                d: &a.d[t0 * nb..(t0 + n) * nb],
                offset: &a.offset[t0 * nb..(t0 + n) * nb],
            };
            match w {
                Linear::Q4(w) => product(&w.view(), bias, &acts, y),
                #[cfg(target_arch = "x86_64")]
                Linear::Q8(w) if a.group == GROUP / QK && !w.packed.is_empty() && has_vnni() => {
                    #[allow(unsafe_code)]
                    // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked just above).
                    unsafe {
                        vnni::packed(w, bias, &a.u[t0 * cols..(t0 + n) * cols], acts.d, y)
                    };
                }
                Linear::Q8(w) => product(&w.view(), bias, &acts, y),
                #[cfg(target_arch = "x86_64")]
                Linear::Bf16(_) => unreachable!("dispatched above"),
            }
        });
}

/// The AMX product, split between the cores by 32-token blocks, or — when there are too few
/// blocks to keep every core busy (a single query) — by ranges of outputs.
#[cfg(target_arch = "x86_64")]
fn bf16_matmul(w: &crate::amx::Bf16Matrix, bias: Option<&[f32]>, a: &QuantActs, y: &mut [f32]) {
    use crate::amx::{BLOCK, ROWS, product};
    let (rows_n, cols) = (w.rows, w.cols);
    debug_assert_eq!(a.cols, cols);
    let tokens = y.len() / rows_n;
    debug_assert!(a.bf.len() >= tokens.div_ceil(BLOCK) * BLOCK * cols);
    let threads = rayon::current_num_threads().max(1);
    let blocks = tokens.div_ceil(BLOCK);
    if blocks >= 2 * threads || threads == 1 {
        y.par_chunks_mut(BLOCK * rows_n)
            .enumerate()
            .for_each(|(i, y)| {
                let n = y.len() / rows_n;
                product(w, bias, &a.bf, i, n, 0..rows_n, y, rows_n);
            });
        return;
    }
    // Output ranges of whole 32-output pairs, about two per core.
    let pairs = rows_n / (2 * ROWS);
    let per = pairs.div_ceil(2 * threads).max(1) * 2 * ROWS;
    let ranges: Vec<std::ops::Range<usize>> = (0..rows_n)
        .step_by(per)
        .map(|n0| n0..(n0 + per).min(rows_n))
        .collect();
    let parts: Vec<Vec<f32>> = ranges
        .par_iter()
        .map(|r| {
            let mut out = vec![0f32; tokens * r.len()];
            product(w, bias, &a.bf, 0, tokens, r.clone(), &mut out, r.len());
            out
        })
        .collect();
    for (r, part) in ranges.iter().zip(parts) {
        for (t, row) in part.chunks_exact(r.len()).enumerate() {
            y[t * rows_n + r.start..t * rows_n + r.end].copy_from_slice(row);
        }
    }
}

struct Acts<'a> {
    q: &'a [i8],
    d: &'a [f32],
    offset: &'a [f32],
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 VNNI, unless `BUNKO_EMBED_NO_AVX512` is set (to compare the paths).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            vnni::available() && std::env::var_os("BUNKO_EMBED_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix as the kernels see it: `rows × cols` bytes (one per weight) and a scale per
/// 32-weight block. `nibbles`: the bytes are `w + 8` (`Q4_0`), so each block's activation
/// offset is subtracted; otherwise they are the signed weights (`Q8_0`).
pub(crate) struct Weights<'a, W> {
    rows: usize,
    cols: usize,
    q: &'a [W],
    d: &'a [f32],
    nibbles: bool,
}

impl Q4Matrix {
    fn view(&self) -> Weights<'_, u8> {
        Weights {
            rows: self.rows,
            cols: self.cols,
            q: &self.q,
            d: &self.d,
            nibbles: true,
        }
    }
}

impl Q8Matrix {
    fn view(&self) -> Weights<'_, i8> {
        Weights {
            rows: self.rows,
            cols: self.cols,
            q: &self.q,
            d: &self.d,
            nibbles: false,
        }
    }
}

/// Every output row for every token of `a`, on the widest unit the CPU has.
fn product<W: Copy + Into<i32>>(
    w: &Weights<'_, W>,
    bias: Option<&[f32]>,
    a: &Acts<'_>,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() && w.cols.is_multiple_of(2 * QK) {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked just above), all `vnni::tiles` needs.
        unsafe {
            vnni::tiles(w, bias, a, y)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `avx2::tiles` needs.
        unsafe {
            avx2::tiles(w, bias, a, y)
        };
        return;
    }
    product_generic(w, bias, a, y);
}

/// Portable version of the products (and the reference the SIMD ones are tested against).
fn product_generic<W: Copy + Into<i32>>(
    w: &Weights<'_, W>,
    bias: Option<&[f32]>,
    a: &Acts<'_>,
    y: &mut [f32],
) {
    let (cols, nb) = (w.cols, w.cols / QK);
    let n = a.q.len() / cols;
    for r in 0..w.rows {
        let wq = &w.q[r * cols..(r + 1) * cols];
        let wd = &w.d[r * nb..(r + 1) * nb];
        for t in 0..n {
            let aq = &a.q[t * cols..(t + 1) * cols];
            let mut acc = 0f32;
            for b in 0..nb {
                let s: i32 = wq[b * QK..(b + 1) * QK]
                    .iter()
                    .zip(&aq[b * QK..(b + 1) * QK])
                    .map(|(&w, &a)| w.into() * i32::from(a))
                    .sum();
                let offset = if w.nibbles { a.offset[t * nb + b] } else { 0.0 };
                acc += wd[b] * (a.d[t * nb + b] * s as f32 - offset);
            }
            y[t * w.rows + r] = bias.map_or(0.0, |b| b[r]) + acc;
        }
    }
}

/// Scaled dot-product attention within each segment (`[start, end)` token ranges), all heads.
/// `qkv` is `tokens × 3·hidden` (Q | K | V per token); `ctx` receives `tokens × hidden`.
pub fn attention(
    qkv: &[f32],
    hidden: usize,
    heads: usize,
    segments: &[(usize, usize)],
    ctx: &mut [f32],
) {
    let hd = hidden / heads;
    // One task per (segment, head); each returns its `len × hd` block, scattered afterwards.
    let work: Vec<(usize, usize, usize)> = segments
        .iter()
        .flat_map(|&(s0, s1)| (0..heads).map(move |h| (s0, s1, h)))
        .collect();
    let outputs: Vec<Vec<f32>> = work
        .par_iter()
        .map(|&(s0, s1, h)| head_attention(qkv, hidden, hd, h, s0, s1))
        .collect();
    for (&(s0, s1, h), out) in work.iter().zip(outputs) {
        for (t, o) in (s0..s1).zip(out.chunks_exact(hd)) {
            ctx[t * hidden + h * hd..t * hidden + (h + 1) * hd].copy_from_slice(o);
        }
    }
}

fn head_attention(
    qkv: &[f32],
    hidden: usize,
    hd: usize,
    h: usize,
    s0: usize,
    s1: usize,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if crate::avx512::available()
        && let Some(out) = crate::avx512::head_attention(qkv, hidden, hd, h, s0, s1)
    {
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2::head_attention(qkv, hidden, hd, h, s0, s1) };
    }
    head_attention_generic(qkv, hidden, hd, h, s0, s1)
}

/// Dot product of two f32 vectors with the widest vector unit the CPU has (the vector index
/// calls this for every distance).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2::dot(a, b) };
    }
    dot(a, b)
}

/// AVX2 + FMA + F16C (hardware half-precision conversion).
fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → IEEE 754 half precision (binary16) bits, rounding to nearest even; overflow gives
/// infinity, values below the smallest subnormal give zero. The vector index stores vectors
/// this way, at half the memory.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |v: u32, rem: u32, halfway: u32| {
        if rem > halfway || (rem == halfway && v & 1 == 1) {
            v + 1
        } else {
            v
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let v = round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        return sign | v as u16;
    }
    // A carry out of the mantissa correctly steps the exponent (up to infinity).
    let v = round(((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000);
    sign | v as u16
}

/// Dot product of an f32 vector and a half-precision one (the vector index's distance).
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { avx2::dot_f16(a, b) };
    }
    dot_f16_generic(a, b)
}

#[inline(always)]
fn dot_f16_generic(a: &[f32], b: &[u16]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * f16_to_f32(*y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * f16_to_f32(y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot product in eight independent lanes, so that it vectorises (a single running sum
/// would force strictly sequential floating-point additions).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Portable attention (the AVX-512 version's tests compare with it).
#[inline(always)]
pub(crate) fn head_attention_generic(
    qkv: &[f32],
    hidden: usize,
    hd: usize,
    h: usize,
    s0: usize,
    s1: usize,
) -> Vec<f32> {
    let len = s1 - s0;
    let stride = 3 * hidden;
    // K and V of this head, contiguous.
    let mut k = Vec::with_capacity(len * hd);
    let mut v = Vec::with_capacity(len * hd);
    for s in s0..s1 {
        k.extend_from_slice(&qkv[s * stride + hidden + h * hd..][..hd]);
        v.extend_from_slice(&qkv[s * stride + 2 * hidden + h * hd..][..hd]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; len * hd];
    let mut p = vec![0f32; len];
    for (t, o) in (s0..s1).zip(out.chunks_exact_mut(hd)) {
        let q = &qkv[t * stride + h * hd..][..hd];
        let mut mx = f32::NEG_INFINITY;
        for (p, kr) in p.iter_mut().zip(k.chunks_exact(hd)) {
            *p = dot(q, kr) * scale;
            mx = mx.max(*p);
        }
        let mut sum = 0.0;
        for p in p.iter_mut() {
            *p = exp(*p - mx);
        }
        sum += p.iter().sum::<f32>();
        let inv = 1.0 / sum;
        for (&p, vr) in p.iter().zip(v.chunks_exact(hd)) {
            let w = p * inv;
            for (o, v) in o.iter_mut().zip(vr) {
                *o += w * v;
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    //! The hot loops compiled for AVX2 + FMA. `tiles` uses integer multiply-adds: `maddubs`
    //! multiplies the unsigned weight nibbles by the signed activations into i16 pairs (at
    //! most 2·15·128, no saturation), `madd` widens to i32, and the block's two scales are
    //! applied in f32 with one FMA; the `+ 8` offset is subtracted once per output.
    use super::{Acts, QK, TILE, Weights};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        // Two 8-lane accumulators hide the FMA latency.
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` and both slices hold at least `n` floats.
            unsafe {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    s1,
                );
            }
            i += 16;
        }
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
        hsum(_mm256_add_ps(s0, s1)) + tail
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`; `a` holds `n` floats and `b` `n` halves (16 bytes per 8).
            unsafe {
                let h0 = _mm_loadu_si128(b.as_ptr().add(i).cast::<__m128i>());
                let h1 = _mm_loadu_si128(b.as_ptr().add(i + 8).cast::<__m128i>());
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_cvtph_ps(h0), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_cvtph_ps(h1),
                    s1,
                );
            }
            i += 16;
        }
        let tail: f32 = a[i..n]
            .iter()
            .zip(&b[i..n])
            .map(|(x, y)| x * super::f16_to_f32(*y))
            .sum();
        hsum(_mm256_add_ps(s0, s1)) + tail
    }

    /// Hardware conversions, for the tests of the portable ones.
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn f16_hw(x: f32) -> (u16, f32) {
        let h = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(x)))
            as u16;
        let back = _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h as i16)));
        (h, back)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn quantize_chunk(q: &mut [i8], d: &mut [f32], off: &mut [f32], x: &[f32]) {
        super::quantize_chunk_generic(q, d, off, x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn layer_norm_row(
        row: &mut [f32],
        y: Option<&[f32]>,
        g: &[f32],
        b: &[f32],
        eps: f32,
    ) {
        super::layer_norm_row(row, y, g, b, eps)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_chunk(c: &mut [f32]) {
        super::gelu_chunk(c)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn head_attention(
        qkv: &[f32],
        hidden: usize,
        hd: usize,
        h: usize,
        s0: usize,
        s1: usize,
    ) -> Vec<f32> {
        super::head_attention_generic(qkv, hidden, hd, h, s0, s1)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Every output row for every token of `a`, in tiles of `TILE` tokens (then 1 at a time).
    /// `nibbles`: weights are unsigned `w + 8` (Q4) and the activations' offsets are
    /// subtracted; otherwise weights are signed bytes (Q8).
    /// Signed weights (`Q8_0`) go through `maddubs` (which wants one unsigned operand) as |w|
    /// times a with w's sign moved onto it; within ±127 no pair saturates.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tiles<W: Copy>(
        w: &Weights<'_, W>,
        bias: Option<&[f32]>,
        a: &Acts<'_>,
        y: &mut [f32],
    ) {
        let (rows, cols, wq, wd, nibbles) = (w.rows, w.cols, w.q, w.d, w.nibbles);
        assert!(std::mem::size_of::<W>() == 1 && cols.is_multiple_of(QK));
        let nb = cols / QK;
        let n = a.q.len() / cols;
        assert!(wq.len() >= rows * cols && wd.len() >= rows * nb);
        assert!(a.d.len() >= n * nb && a.offset.len() >= n * nb && y.len() >= n * rows);
        let mut t0 = 0;
        while t0 < n {
            if n - t0 >= TILE {
                tile::<W, TILE>(rows, cols, wq, wd, bias, a, y, t0, nibbles);
                t0 += TILE;
            } else {
                tile::<W, 1>(rows, cols, wq, wd, bias, a, y, t0, nibbles);
                t0 += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn tile<W: Copy, const T: usize>(
        rows: usize,
        cols: usize,
        wq: &[W],
        wd: &[f32],
        bias: Option<&[f32]>,
        a: &Acts<'_>,
        y: &mut [f32],
        t0: usize,
        nibbles: bool,
    ) {
        const GROUP: usize = 64;
        let nb = cols / QK;
        let ones = _mm256_set1_epi16(1);
        let act = &a.q[t0 * cols..(t0 + T) * cols];
        let ad = &a.d[t0 * nb..(t0 + T) * nb];
        let ao = &a.offset[t0 * nb..(t0 + T) * nb];
        let mut sc = [[0f32; T]; GROUP];
        for r in 0..rows {
            let wrow = &wq[r * cols..(r + 1) * cols];
            let wdr = &wd[r * nb..(r + 1) * nb];
            let mut off = [0f32; T];
            let mut acc = [_mm256_setzero_ps(); T];
            // Blocks in groups, so the table of scale products stays small and on the stack.
            for g in (0..nb).step_by(GROUP) {
                let ge = (g + GROUP).min(nb);
                for b in g..ge {
                    for t in 0..T {
                        sc[b - g][t] = wdr[b] * ad[t * nb + b];
                        if nibbles {
                            off[t] += wdr[b] * ao[t * nb + b];
                        }
                    }
                }
                for b in g..ge {
                    // SAFETY: `wrow` holds `cols` bytes and `b < cols / 32`: the 32 bytes from
                    // `b * 32` are inside it.
                    let wv = unsafe { _mm256_loadu_si256(wrow.as_ptr().add(b * QK).cast()) };
                    let wabs = if nibbles {
                        wv
                    } else {
                        _mm256_sign_epi8(wv, wv)
                    };
                    for t in 0..T {
                        // SAFETY: `act` holds `T * cols` bytes; `t < T`, `b < cols / 32`.
                        let av = unsafe {
                            _mm256_loadu_si256(act.as_ptr().add(t * cols + b * QK).cast())
                        };
                        let av = if nibbles {
                            av
                        } else {
                            _mm256_sign_epi8(av, wv)
                        };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, av), ones);
                        acc[t] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(sc[b - g][t]),
                            acc[t],
                        );
                    }
                }
            }
            let b0 = bias.map_or(0.0, |b| b[r]);
            for t in 0..T {
                y[(t0 + t) * rows + r] = b0 + hsum(acc[t]) - off[t];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    //! The same products with AVX-512 VNNI: `vpdpbusd` multiplies unsigned by signed bytes and
    //! sums each group of four into i32 in one instruction, and 512-bit registers hold two
    //! 32-weight blocks, so one instruction does the work of four AVX2 ones.
    use super::{Acts, QK, Weights};

    /// Tokens per tile: 32 vector registers leave room for eight accumulators.
    const WIDE: usize = 8;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn tiles<W: Copy>(
        w: &Weights<'_, W>,
        bias: Option<&[f32]>,
        a: &Acts<'_>,
        y: &mut [f32],
    ) {
        let (rows, cols, wq, wd, nibbles) = (w.rows, w.cols, w.q, w.d, w.nibbles);
        // Callers route only even block counts here (two blocks per register).
        assert!(std::mem::size_of::<W>() == 1 && cols.is_multiple_of(2 * QK));
        let nb = cols / QK;
        let n = a.q.len() / cols;
        assert!(wq.len() >= rows * cols && wd.len() >= rows * nb);
        assert!(a.d.len() >= n * nb && a.offset.len() >= n * nb && y.len() >= n * rows);
        let mut t0 = 0;
        while t0 < n {
            if n - t0 >= WIDE {
                tile::<W, WIDE>(rows, cols, wq, wd, bias, a, y, t0, nibbles);
                t0 += WIDE;
            } else {
                tile::<W, 1>(rows, cols, wq, wd, bias, a, y, t0, nibbles);
                t0 += 1;
            }
        }
    }

    /// Tokens per tile of the packed kernel; with [`RB`] row blocks, 24 integer accumulators.
    const PT: usize = 6;
    /// Blocks of 16 rows per tile of the packed kernel.
    const RB: usize = 4;

    /// Row-scaled int8 weights in the packed form (16 rows per register) × activations scaled
    /// per 128 values (as `q + 128`): per 4 columns, [`RB`] weight loads and [`PT`] broadcast
    /// activations feed `PT × RB` `vpdpbusd` — no horizontal sums; per 128 columns the integer
    /// sums (started at the rows' corrections) are converted and scaled by the token's group
    /// scale into f32 sums kept in memory; the row scales and bias at the end.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn packed(
        w: &super::Q8Matrix,
        bias: Option<&[f32]>,
        au: &[u8],
        ad: &[f32],
        y: &mut [f32],
    ) {
        let (rows, cols) = (w.rows, w.cols);
        let n = au.len() / cols;
        assert!(rows.is_multiple_of(16) && cols.is_multiple_of(super::GROUP));
        assert!(w.packed.len() >= rows * cols && w.row_scale.len() >= rows);
        assert!(w.packed_corr.len() >= rows / 16 * (cols / super::GROUP) * 16);
        assert!(au.len() >= n * cols && ad.len() >= n * (cols / QK) && y.len() >= n * rows);
        let mut t0 = 0;
        while t0 < n {
            let t = (n - t0).min(PT);
            match t {
                PT => packed_rows::<PT>(w, bias, au, ad, y, t0),
                5 => packed_rows::<5>(w, bias, au, ad, y, t0),
                4 => packed_rows::<4>(w, bias, au, ad, y, t0),
                3 => packed_rows::<3>(w, bias, au, ad, y, t0),
                2 => packed_rows::<2>(w, bias, au, ad, y, t0),
                _ => packed_rows::<1>(w, bias, au, ad, y, t0),
            }
            t0 += t;
        }
    }

    /// Tokens `t0..t0 + T`, every row, [`RB`] row blocks at a time (then one).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn packed_rows<const T: usize>(
        w: &super::Q8Matrix,
        bias: Option<&[f32]>,
        au: &[u8],
        ad: &[f32],
        y: &mut [f32],
        t0: usize,
    ) {
        let blocks = w.rows / 16;
        let mut b = 0;
        while b < blocks {
            if blocks - b >= RB {
                packed_tile::<T, RB>(w, bias, au, ad, y, t0, b);
                b += RB;
            } else {
                packed_tile::<T, 1>(w, bias, au, ad, y, t0, b);
                b += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn packed_tile<const T: usize, const R: usize>(
        w: &super::Q8Matrix,
        bias: Option<&[f32]>,
        au: &[u8],
        ad: &[f32],
        y: &mut [f32],
        t0: usize,
        b0: usize,
    ) {
        let (rows, cols) = (w.rows, w.cols);
        let (quads, groups, nb) = (cols / 4, cols / super::GROUP, cols / QK);
        let per = super::GROUP / QK;
        let mut sums = [[_mm512_setzero_ps(); R]; T];
        for g in 0..groups {
            let mut acc = [[_mm512_setzero_si512(); R]; T];
            for r in 0..R {
                // SAFETY: block `b0 + r < rows / 16` and group `g < groups`: the 16 values
                // from `((b0 + r) * groups + g) * 16` are inside `packed_corr` (asserted by
                // the caller).
                let c = unsafe {
                    _mm512_loadu_si512(
                        w.packed_corr
                            .as_ptr()
                            .add(((b0 + r) * groups + g) * 16)
                            .cast(),
                    )
                };
                for acc in acc.iter_mut() {
                    acc[r] = c;
                }
            }
            for qd in g * 32..(g + 1) * 32 {
                let mut wv = [_mm512_setzero_si512(); R];
                for (r, wv) in wv.iter_mut().enumerate() {
                    // SAFETY: `(b0 + r) * quads + qd < rows / 16 * quads`: 64 bytes inside
                    // `packed` (`rows * cols` bytes, asserted by the caller).
                    *wv = unsafe {
                        _mm512_loadu_si512(
                            w.packed.as_ptr().add(((b0 + r) * quads + qd) * 64).cast(),
                        )
                    };
                }
                for (t, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: token `t0 + t < n` and `qd * 4 + 4 <= cols`: 4 bytes inside
                    // `au` (`n * cols`, asserted by the caller).
                    let x = unsafe {
                        std::ptr::read_unaligned(
                            au.as_ptr().add((t0 + t) * cols + qd * 4).cast::<i32>(),
                        )
                    };
                    let xv = _mm512_set1_epi32(x);
                    for r in 0..R {
                        acc[r] = _mm512_dpbusd_epi32(acc[r], xv, wv[r]);
                    }
                }
            }
            for (t, (sum, acc)) in sums.iter_mut().zip(&acc).enumerate() {
                let scale = _mm512_set1_ps(ad[(t0 + t) * nb + g * per]);
                for r in 0..R {
                    sum[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), scale, sum[r]);
                }
            }
        }
        for r in 0..R {
            let row0 = (b0 + r) * 16;
            // SAFETY: both slices are 16 floats long (checked by the indexing).
            let ws = unsafe { _mm512_loadu_ps(w.row_scale[row0..row0 + 16].as_ptr()) };
            let bv = bias.map_or(_mm512_setzero_ps(), |b| {
                // SAFETY: as above.
                unsafe { _mm512_loadu_ps(b[row0..row0 + 16].as_ptr()) }
            });
            for (t, sum) in sums.iter().enumerate() {
                let out = &mut y[(t0 + t) * rows + row0..(t0 + t) * rows + row0 + 16];
                // SAFETY: `out` holds 16 floats.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), _mm512_fmadd_ps(sum[r], ws, bv)) };
            }
        }
    }

    /// `[x; 8] ++ [y; 8]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair(x: f32, y: f32) -> __m512 {
        _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(x), _mm512_set1_ps(y))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn tile<W: Copy, const T: usize>(
        rows: usize,
        cols: usize,
        wq: &[W],
        wd: &[f32],
        bias: Option<&[f32]>,
        a: &Acts<'_>,
        y: &mut [f32],
        t0: usize,
        nibbles: bool,
    ) {
        let nb = cols / QK;
        let pairs = nb / 2;
        let act = &a.q[t0 * cols..(t0 + T) * cols];
        let ad = &a.d[t0 * nb..(t0 + T) * nb];
        let ao = &a.offset[t0 * nb..(t0 + T) * nb];
        // Per token and block pair, the activation scales (and offsets / 8, one share per
        // lane), laid out to match the two blocks in a register. Built once per tile.
        let mut scale = Vec::with_capacity(T * pairs);
        let mut offset = Vec::with_capacity(T * pairs);
        for t in 0..T {
            for p in 0..pairs {
                let i = t * nb + 2 * p;
                scale.push(pair(ad[i], ad[i + 1]));
                offset.push(pair(ao[i] / 8.0, ao[i + 1] / 8.0));
            }
        }
        for r in 0..rows {
            let wrow = &wq[r * cols..(r + 1) * cols];
            let wdr = &wd[r * nb..(r + 1) * nb];
            let mut acc = [_mm512_setzero_ps(); T];
            for p in 0..pairs {
                // SAFETY: `wrow` holds `cols` bytes and `p < cols / 64`: the 64 bytes from
                // `p * 64` are inside it.
                let wv = unsafe { _mm512_loadu_si512(wrow.as_ptr().add(p * 2 * QK).cast()) };
                let ws = pair(wdr[2 * p], wdr[2 * p + 1]);
                let wabs = if nibbles { wv } else { _mm512_abs_epi8(wv) };
                let neg = _mm512_movepi8_mask(wv);
                for t in 0..T {
                    // SAFETY: `act` holds `T * cols` bytes; `t < T`, `p < cols / 64`.
                    let av = unsafe {
                        _mm512_loadu_si512(act.as_ptr().add(t * cols + p * 2 * QK).cast())
                    };
                    // Signed weights: move each weight's sign onto the activation.
                    let av = if nibbles {
                        av
                    } else {
                        _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av)
                    };
                    let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, av);
                    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(s), scale[t * pairs + p]);
                    let v = if nibbles {
                        _mm512_sub_ps(v, offset[t * pairs + p])
                    } else {
                        v
                    };
                    acc[t] = _mm512_fmadd_ps(v, ws, acc[t]);
                }
            }
            let b0 = bias.map_or(0.0, |b| b[r]);
            for t in 0..T {
                y[(t0 + t) * rows + r] = b0 + _mm512_reduce_add_ps(acc[t]);
            }
        }
    }
}

/// `x = LayerNorm(x + y)` row by row (`y = None`: `LayerNorm(x)`).
pub fn add_layer_norm(x: &mut [f32], y: Option<&[f32]>, g: &[f32], b: &[f32], eps: f32) {
    let h = g.len();
    x.par_chunks_mut(h).enumerate().for_each(|(t, row)| {
        let y = y.map(|y| &y[t * h..(t + 1) * h]);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2::layer_norm_row(row, y, g, b, eps) };
        }
        layer_norm_row(row, y, g, b, eps);
    });
}

#[inline(always)]
fn layer_norm_row(row: &mut [f32], y: Option<&[f32]>, g: &[f32], b: &[f32], eps: f32) {
    let h = row.len();
    if let Some(y) = y {
        for (r, v) in row.iter_mut().zip(y) {
            *r += v;
        }
    }
    let mean = lanes_sum(row) / h as f32;
    let mut var = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for l in 0..8 {
            var[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    let var = (var.iter().sum::<f32>() + tail) / h as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for ((r, g), b) in row.iter_mut().zip(g).zip(b) {
        *r = (*r - mean) * inv * g + b;
    }
}

/// Sum in eight lanes (vectorises; a running sum would not).
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The exact (erf) GELU that BERT uses.
pub fn gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        #[cfg(target_arch = "x86_64")]
        if crate::avx512::available() {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX-512 F (checked just above).
            return unsafe { crate::avx512::gelu(c) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2::gelu_chunk(c) };
        }
        gelu_chunk(c);
    });
}

#[inline(always)]
fn gelu_chunk(c: &mut [f32]) {
    for v in c {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// e^x for the softmax and GELU: 2^(x·log2 e) split into an integer power (built in the
/// exponent bits) and a degree-6 polynomial for the fraction; relative error < 5e-6 (from
/// rounding x·log2 e in f32 at the ends of the range), branch-free so that loops over it
/// vectorise. Inputs are clamped to [−87, 88].
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    let n = round_even(t);
    let f = t - n; // in [-0.5, 0.5]
    // 2^f, Taylor in f·ln 2.
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// erf(x) to within ≈1e-6 in f32 (Numerical Recipes' Chebyshev fit of erfc).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let r = 1.0 - t * exp(poly);
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4_row(weights: &[i8], scale_bits: u16) -> Vec<u8> {
        let mut raw = Vec::new();
        for block in weights.chunks(QK) {
            raw.extend(scale_bits.to_le_bytes());
            for j in 0..16 {
                let lo = (block[j] + 8) as u8;
                let hi = (block[j + 16] + 8) as u8;
                raw.push(lo | (hi << 4));
            }
        }
        raw
    }

    #[test]
    fn quantised_product_matches_f32_reference_and_the_portable_kernel() {
        // 3 outputs × 64 inputs, scale 0.5 (f16 0x3800); 5 tokens (one partial tile).
        let (rows, cols, tokens) = (3usize, 64usize, 5usize);
        let weights: Vec<i8> = (0..rows * cols).map(|i| ((i * 7 % 16) as i8) - 8).collect();
        let raw: Vec<u8> = weights
            .chunks(cols)
            .flat_map(|r| q4_row(r, 0x3800))
            .collect();
        let q4 = Q4Matrix::from_q4_0(rows, cols, &raw).expect("shape");
        let x: Vec<f32> = (0..tokens * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let bias = [0.25, -1.0, 2.0];
        let mut a = QuantActs::default();
        a.quantize(&x, cols);
        let mut y = vec![0f32; tokens * rows];
        let w = Linear::Q4(q4);
        matmul(&w, Some(&bias), &a, &mut y);
        let Linear::Q4(q4) = &w else { unreachable!() };
        let acts = Acts {
            q: &a.q,
            d: &a.d,
            offset: &a.offset,
        };
        let mut portable = vec![0f32; tokens * rows];
        product_generic(&q4.view(), Some(&bias), &acts, &mut portable);
        for (p, y) in portable.iter().zip(&y) {
            assert!(
                (p - y).abs() < 1e-4,
                "SIMD and portable kernels disagree: {p} vs {y}"
            );
        }
        for t in 0..tokens {
            for r in 0..rows {
                let exact: f32 = bias[r]
                    + (0..cols)
                        .map(|c| x[t * cols + c] * f32::from(weights[r * cols + c]) * 0.5)
                        .sum::<f32>();
                let got = y[t * rows + r];
                assert!(
                    (got - exact).abs() < 0.05 * exact.abs().max(1.0),
                    "t{t} r{r}: {got} vs {exact}"
                );
            }
        }
        let mut row = vec![0f32; cols];
        dequantize_q4_0_row(&raw[..cols / QK * 18], &mut row);
        assert_eq!(row[1], f32::from(weights[1]) * 0.5);
    }

    #[test]
    fn int8_weights_from_f32_match_the_f32_product() {
        let (rows, cols, tokens) = (5usize, 96usize, 7usize);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / 40.0)
            .collect();
        let x: Vec<f32> = (0..tokens * cols)
            .map(|i| ((i * 11 % 23) as f32 - 11.0) / 5.0)
            .collect();
        let w = Linear::Q8(Q8Matrix::from_f32(rows, cols, &wf).unwrap());
        let mut a = QuantActs::default();
        a.quantize(&x, cols);
        let mut y = vec![0f32; tokens * rows];
        matmul(&w, None, &a, &mut y);
        let Linear::Q8(q8) = &w else { unreachable!() };
        let acts = Acts {
            q: &a.q,
            d: &a.d,
            offset: &a.offset,
        };
        let mut portable = vec![0f32; tokens * rows];
        product_generic(&q8.view(), None, &acts, &mut portable);
        for t in 0..tokens {
            for r in 0..rows {
                let terms = (0..cols).map(|c| x[t * cols + c] * wf[r * cols + c]);
                let exact: f32 = terms.clone().sum();
                let magnitude: f32 = terms.map(f32::abs).sum();
                let (got, p) = (y[t * rows + r], portable[t * rows + r]);
                assert!((got - p).abs() < 1e-4, "SIMD {got} vs portable {p}");
                // Two 8-bit roundings per term: well under 1 % of the terms' total size.
                assert!(
                    (got - exact).abs() < 0.01 * magnitude,
                    "{got} vs {exact} ({magnitude})"
                );
            }
        }
        assert!(
            Linear::stack(vec![
                w,
                Linear::Q4(Q4Matrix::from_q4_0(1, 32, &[0u8; 18]).unwrap())
            ])
            .is_none()
        );
    }

    #[test]
    fn grouped_activations_with_row_scales_match_the_portable_product() {
        // 11 tokens: a full tile of 8 and three single ones (6 and 5 for the packed kernel);
        // 384 columns: three groups. 6 rows: the per-block kernel reading the grouped scales;
        // 48 rows (three blocks of 16: a row-block tail): the packed one.
        for rows in [6usize, 48] {
            grouped_case(rows);
        }
    }

    fn grouped_case(rows: usize) {
        let (cols, tokens) = (384usize, 11usize);
        let wf: Vec<f32> = (0..rows * cols)
            // Mostly positive: the +128 offset's correction is large and must be exact.
            .map(|i| ((i * 37 % 61) as f32 - 15.0) / 40.0)
            .collect();
        let x: Vec<f32> = (0..tokens * cols)
            .map(|i| ((i * 11 % 23) as f32 - 11.0) / 5.0 + if i % 97 == 0 { 9.0 } else { 0.0 })
            .collect();
        let w = Linear::Q8(Q8Matrix::from_f32(rows, cols, &wf).unwrap());
        let Linear::Q8(q8) = &w else { unreachable!() };
        assert_eq!(q8.row_scale.len(), rows);
        assert_eq!(
            q8.packed.is_empty(),
            !rows.is_multiple_of(16) || !has_vnni()
        );
        let mut a = QuantActs::default();
        a.quantize_grouped(&x, cols);
        assert!(
            a.u.iter()
                .zip(&a.q)
                .all(|(&u, &q)| i32::from(u) == i32::from(q) + 128)
        );
        let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.25).collect();
        let mut y = vec![0f32; tokens * rows];
        matmul(&w, Some(&bias), &a, &mut y);
        let acts = Acts {
            q: &a.q,
            d: &a.d,
            offset: &a.offset,
        };
        let mut portable = vec![0f32; tokens * rows];
        product_generic(&q8.view(), Some(&bias), &acts, &mut portable);
        for t in 0..tokens {
            for r in 0..rows {
                let terms = (0..cols).map(|c| x[t * cols + c] * wf[r * cols + c]);
                let exact: f32 = bias[r] + terms.clone().sum::<f32>();
                let magnitude: f32 = terms.map(f32::abs).sum();
                let (got, p) = (y[t * rows + r], portable[t * rows + r]);
                assert!(
                    (got - p).abs() < 1e-5 * magnitude.max(1.0),
                    "SIMD {got} vs portable {p}"
                );
                assert!(
                    (got - exact).abs() < 0.02 * magnitude,
                    "{got} vs {exact} ({magnitude})"
                );
            }
        }
        // Stacked (Q | K | V) matrices keep their corrections and scales.
        let stacked = Linear::stack(vec![
            Linear::Q8(Q8Matrix::from_f32(rows, cols, &wf).unwrap()),
            Linear::Q8(Q8Matrix::from_f32(rows, cols, &wf).unwrap()),
        ])
        .unwrap();
        let mut y2 = vec![0f32; tokens * 2 * rows];
        matmul(&stacked, None, &a, &mut y2);
        for t in 0..tokens {
            for r in 0..rows {
                let one = y[t * rows + r] - bias[r];
                assert!((y2[t * 2 * rows + r] - one).abs() < 1e-4);
                assert!((y2[t * 2 * rows + rows + r] - one).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn attention_matches_a_direct_softmax() {
        // 2 heads of 8 over one 3-token segment and one 1-token segment (which attends to itself).
        let (hidden, heads) = (16usize, 2usize);
        let tokens = 4;
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let mut ctx = vec![0f32; tokens * hidden];
        attention(&qkv, hidden, heads, &[(0, 3), (3, 4)], &mut ctx);
        let hd = hidden / heads;
        let at = |t: usize, part: usize, h: usize, e: usize| {
            qkv[t * 3 * hidden + part * hidden + h * hd + e]
        };
        for h in 0..heads {
            let t = 1;
            let logits: Vec<f32> = (0..3)
                .map(|s| {
                    (0..hd)
                        .map(|e| at(t, 0, h, e) * at(s, 1, h, e))
                        .sum::<f32>()
                        / (hd as f32).sqrt()
                })
                .collect();
            let z: f32 = logits.iter().map(|l| l.exp()).sum();
            for e in 0..hd {
                let want: f32 = (0..3).map(|s| logits[s].exp() / z * at(s, 2, h, e)).sum();
                assert!((ctx[t * hidden + h * hd + e] - want).abs() < 1e-5);
            }
            for e in 0..hd {
                assert!((ctx[3 * hidden + h * hd + e] - at(3, 2, h, e)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        for n in [0usize, 1, 15, 16, 17, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot_f32(&a, &b)) - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn half_precision_conversions_are_exact_and_round_to_nearest_even() {
        // Every half converts to the f32 it denotes and back to itself (NaNs stay NaN).
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f16_to_f32(f32_to_f16(f)).is_nan());
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
        }
        // Known values: 1, the largest half, the smallest subnormal, ties to even.
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(70000.0), 0x7c00);
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // tie: stays even
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02); // tie: rounds up to even
        // The hardware agrees on many values across the whole range.
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            let mut x = 0x1234_5678u32;
            for _ in 0..200_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let f = f32::from_bits(x);
                #[allow(unsafe_code)]
                // SAFETY: the CPU has F16C (checked above).
                let (h, back) = unsafe { avx2::f16_hw(f) };
                if f.is_nan() {
                    continue;
                }
                assert_eq!(f32_to_f16(f), h, "{f:e}");
                assert_eq!(f16_to_f32(h).to_bits(), back.to_bits());
            }
        }
    }

    #[test]
    fn half_precision_dot_matches_the_plain_sum() {
        for n in [0usize, 1, 15, 16, 17, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<u16> = (0..n)
                .map(|i| f32_to_f16((i as f32 * 0.11).cos()))
                .collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(f16_to_f32(*y)))
                .sum();
            assert!((f64::from(dot_f16(&a, &b)) - want).abs() < 1e-4, "n = {n}");
            assert!((f64::from(dot_f16_generic(&a, &b)) - want).abs() < 1e-4);
        }
    }

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-5, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.0), "clamped");
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_and_layer_norm() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (4.0, 1.0),
        ] {
            assert!((erf(x) - want).abs() < 2e-6, "erf({x}) = {}", erf(x));
        }
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, None, &[1.0; 4], &[0.0; 4], 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert_eq!(round_even(2.5), 2.0);
        assert_eq!(round_even(-3.5), -4.0);
        assert_eq!(round_even(126.6), 127.0);
    }
}
