//! The f32 parts of a layer on AVX-512: GELU and attention. Both were loops left to the
//! compiler (on AVX2); after the matrix products moved to the tile unit they took half the
//! time of a batch. Written with intrinsics so that every lane does useful work: attention keeps
//! K transposed so a query's scores are 16 keys per instruction (no horizontal sums), and
//! GELU's erf needs no division.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

pub(crate) fn available() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::env::var_os("BUNKO_EMBED_NO_AVX512").is_none()
    })
}

/// e^x for x ≤ 0 (clamped at −87): 2^(x·log2 e) as a degree-6 polynomial of the fraction,
/// scaled by the integer power with `vscalefps` — the scalar [`super::kernels::exp`] in 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_neg(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
    // Round to nearest (imm 0), keeping no fraction bits.
    let n = _mm512_roundscale_ps::<0>(t);
    let f = _mm512_sub_ps(t, n);
    let c = |v: f32| _mm512_set1_ps(v);
    let mut p = c(0.000_154_035_3);
    for k in [
        0.001_333_355_8,
        0.009_618_129,
        0.055_504_11,
        0.240_226_5,
        std::f32::consts::LN_2,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, f, c(k));
    }
    _mm512_scalef_ps(p, n)
}

/// GELU with the exact erf (BERT's), in place. erf by Abramowitz & Stegun 7.1.26
/// (|error| ≤ 1.5·10⁻⁷), its `1 / (1 + p·z)` by a reciprocal estimate and one Newton step.
#[target_feature(enable = "avx512f")]
pub(crate) fn gelu(c: &mut [f32]) {
    let n = c.len();
    let mut i = 0;
    while i < n {
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        // SAFETY: the mask covers only lanes `i..n` of `c`.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, c.as_ptr().add(i));
            _mm512_mask_storeu_ps(c.as_mut_ptr().add(i), m, gelu16(x));
        }
        i += 16;
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn gelu16(x: __m512) -> __m512 {
    let c = |v: f32| _mm512_set1_ps(v);
    let ax = _mm512_abs_ps(x);
    let z = _mm512_mul_ps(ax, c(std::f32::consts::FRAC_1_SQRT_2));
    let d = _mm512_fmadd_ps(z, c(0.327_591_1), c(1.0));
    let r = _mm512_rcp14_ps(d);
    let t = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, c(2.0)));
    let mut p = c(1.061_405_4);
    for k in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
        p = _mm512_fmadd_ps(p, t, c(k));
    }
    p = _mm512_mul_ps(p, t);
    let e = exp_neg(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
    let erf = _mm512_fnmadd_ps(p, e, c(1.0));
    // 0.5·x·(1 + sign(x)·erf(|x|/√2)) = 0.5·(x + |x|·erf).
    _mm512_mul_ps(c(0.5), _mm512_fmadd_ps(ax, erf, x))
}

/// One group of 128 activations to int8 with one scale (`amax / 127`), as the portable
/// [`super::kernels::QuantActs::quantize_grouped`] does it: `q` the values, `u` = `q + 128`;
/// returns the scale and the sum of each 32-value block's `q`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn quantize_group(x: &[f32], q: &mut [i8], u: &mut [u8]) -> (f32, [i32; 4]) {
    assert!(x.len() == 128 && q.len() == 128 && u.len() == 128);
    let mut v = [_mm512_setzero_ps(); 8];
    let mut amax = _mm512_setzero_ps();
    for (i, v) in v.iter_mut().enumerate() {
        // SAFETY: `x` holds 128 floats; `i < 8`.
        *v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i * 16)) };
        amax = _mm512_max_ps(amax, _mm512_abs_ps(*v));
    }
    let scale = _mm512_reduce_max_ps(amax) / 127.0;
    let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
    let mut sums = [0i32; 4];
    let (lo, hi) = (_mm512_set1_epi32(-128), _mm512_set1_epi32(127));
    for (i, v) in v.iter().enumerate() {
        // Round half to even (the default rounding mode), then clamp as the portable code.
        let r = _mm512_cvtps_epi32(_mm512_mul_ps(*v, inv));
        let r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
        sums[i / 2] += _mm512_reduce_add_epi32(r);
        let b = _mm512_cvtepi32_epi8(r);
        // SAFETY: `q` and `u` hold 128 bytes; `i < 8`.
        unsafe {
            _mm_storeu_si128(q.as_mut_ptr().add(i * 16).cast(), b);
            let ub = _mm_xor_si128(b, _mm_set1_epi8(i8::MIN));
            _mm_storeu_si128(u.as_mut_ptr().add(i * 16).cast(), ub);
        }
    }
    (scale, sums)
}

/// Queries handled together: each K and V row loaded serves this many.
const QB: usize = 4;

/// One head's attention over one segment (`s0..s1`), as [`super::kernels`]'s portable
/// version: `len × hd` values. `None` unless `hd` is 16, 32 or 64 (BERT-family heads).
pub(crate) fn head_attention(
    qkv: &[f32],
    hidden: usize,
    hd: usize,
    h: usize,
    s0: usize,
    s1: usize,
) -> Option<Vec<f32>> {
    // SAFETY (each): the caller checked `available`, all these functions need.
    Some(match hd {
        16 => unsafe { head::<1>(qkv, hidden, h, s0, s1) },
        32 => unsafe { head::<2>(qkv, hidden, h, s0, s1) },
        64 => unsafe { head::<4>(qkv, hidden, h, s0, s1) },
        _ => return None,
    })
}

/// [`head_attention`] for `hd = 16 · VR`, so the accumulators live in registers.
#[target_feature(enable = "avx512f")]
fn head<const VR: usize>(qkv: &[f32], hidden: usize, h: usize, s0: usize, s1: usize) -> Vec<f32> {
    let hd = 16 * VR;
    let len = s1 - s0;
    let lp = len.div_ceil(16) * 16;
    let stride = 3 * hidden;
    assert!(len > 0 && (h + 1) * hd <= hidden && qkv.len() >= s1 * stride);
    // Q (rows padded to whole blocks by repeating the last), K transposed (hd × lp, padding
    // zero) and V (len × hd), this head only.
    let qrows = len.div_ceil(QB) * QB;
    let mut q = Vec::with_capacity(qrows * hd);
    let mut kt = vec![0f32; hd * lp];
    let mut v = Vec::with_capacity(len * hd);
    for (j, s) in (s0..s1).enumerate() {
        q.extend_from_slice(&qkv[s * stride + h * hd..][..hd]);
        let k = &qkv[s * stride + hidden + h * hd..][..hd];
        for (d, &x) in k.iter().enumerate() {
            kt[d * lp + j] = x;
        }
        v.extend_from_slice(&qkv[s * stride + 2 * hidden + h * hd..][..hd]);
    }
    for _ in len..qrows {
        q.extend_from_within((len - 1) * hd..len * hd);
    }
    let scale = _mm512_set1_ps(1.0 / (hd as f32).sqrt());
    let tail: __mmask16 = if len.is_multiple_of(16) {
        0xffff
    } else {
        (1u16 << (len % 16)) - 1
    };
    let mask = |jb: usize| if jb + 1 == lp / 16 { tail } else { 0xffff };
    let mut out = vec![0f32; qrows * hd];
    let mut p = vec![0f32; QB * lp];
    for t in (0..len).step_by(QB) {
        let qb = &q[t * hd..(t + QB) * hd];
        // Scores: 16 keys per register, QB queries per K load.
        for jb in 0..lp / 16 {
            let mut acc = [_mm512_setzero_ps(); QB];
            for d in 0..hd {
                // SAFETY: `d < hd` and `jb * 16 + 16 <= lp`: inside `kt`.
                let kv = unsafe { _mm512_loadu_ps(kt.as_ptr().add(d * lp + jb * 16)) };
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(qb[i * hd + d]), kv, *acc);
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: `i < QB`, `jb * 16 + 16 <= lp`: inside `p`.
                unsafe { _mm512_storeu_ps(p.as_mut_ptr().add(i * lp + jb * 16), *acc) };
            }
        }
        // Softmax per query over the `len` real keys (padding lanes masked off).
        for row in p.chunks_exact_mut(lp) {
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for jb in 0..lp / 16 {
                // SAFETY: `jb * 16 + 16 <= lp = row.len()`.
                let s = unsafe { _mm512_loadu_ps(row.as_ptr().add(jb * 16)) };
                mx = _mm512_mask_max_ps(mx, mask(jb), mx, _mm512_mul_ps(s, scale));
            }
            let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            let mut sum = _mm512_setzero_ps();
            for jb in 0..lp / 16 {
                // SAFETY: as above.
                unsafe {
                    let s = _mm512_loadu_ps(row.as_ptr().add(jb * 16));
                    let e = _mm512_maskz_mov_ps(mask(jb), exp_neg(_mm512_fmsub_ps(s, scale, mx)));
                    sum = _mm512_add_ps(sum, e);
                    _mm512_storeu_ps(row.as_mut_ptr().add(jb * 16), e);
                }
            }
            let inv = 1.0 / _mm512_reduce_add_ps(sum);
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
        // Context: Σ_j p[j] · V[j], QB queries per V row load.
        let mut acc = [[_mm512_setzero_ps(); VR]; QB];
        for j in 0..len {
            for r in 0..VR {
                // SAFETY: `j < len`, `r * 16 + 16 <= hd`: inside `v`.
                let vv = unsafe { _mm512_loadu_ps(v.as_ptr().add(j * hd + r * 16)) };
                for (i, acc) in acc.iter_mut().enumerate() {
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[i * lp + j]), vv, acc[r]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: `t + i < qrows`, `r * 16 + 16 <= hd`: inside `out`.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((t + i) * hd + r * 16), *a) };
            }
        }
    }
    out.truncate(len * hd);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn skip() -> bool {
        if available() {
            return false;
        }
        eprintln!("SKIPPED: this CPU has no AVX-512 F");
        true
    }

    #[test]
    fn gelu_matches_the_scalar_erf_gelu() {
        if skip() {
            return;
        }
        for n in [0usize, 1, 15, 16, 17, 1000] {
            let x: Vec<f32> = values(n, 3).iter().map(|v| v * 12.0).collect();
            let mut got = x.clone();
            // SAFETY: AVX-512 F is available (checked above).
            #[allow(unsafe_code)]
            unsafe {
                gelu(&mut got)
            };
            for (g, &x) in got.iter().zip(&x) {
                let want = 0.5 * f64::from(x) * (1.0 + erf64(f64::from(x) / 2f64.sqrt()));
                assert!(
                    (f64::from(*g) - want).abs() < 2e-6 * (1.0 + want.abs()),
                    "gelu({x}) = {g}, want {want}"
                );
            }
        }
    }

    /// erf in f64: its Maclaurin series below 3, else 1 − erfc by the continued fraction
    /// `erfc z = e^(−z²)/√π · 1/(z + ½/(z + 1/(z + 3⁄2/(z + …))))` (reference only).
    fn erf64(x: f64) -> f64 {
        let z = x.abs();
        let r = if z < 3.0 {
            // Maclaurin series: 2/√π Σ (−1)^n z^(2n+1) / (n! (2n+1)).
            let (mut term, mut sum, mut n) = (z, z, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -z * z / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = z;
            for k in (1..80).rev() {
                f = z + f64::from(k) / 2.0 / f;
            }
            1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / f
        };
        if x < 0.0 { -r } else { r }
    }

    #[test]
    fn group_quantisation_matches_the_scalar_rule() {
        if skip() {
            return;
        }
        let mut cases: Vec<Vec<f32>> = (0..20u32)
            .map(|s| values(128, s + 1).iter().map(|v| v * 4.0).collect())
            .collect();
        cases.push(vec![0.0; 128]);
        let mut ties: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 2.0).collect();
        ties[0] = 127.0; // scale 1: every half-integer is a tie
        cases.push(ties);
        for x in cases {
            let (mut q, mut u) = ([0i8; 128], [0u8; 128]);
            // SAFETY: AVX-512 F and BW are available (checked above).
            #[allow(unsafe_code)]
            let (scale, sums) = unsafe { quantize_group(&x, &mut q, &mut u) };
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(scale, amax / 127.0);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (i, &v) in x.iter().enumerate() {
                let want = (v * inv).round_ties_even().clamp(-128.0, 127.0) as i8;
                assert_eq!(q[i], want, "value {i}: {v}");
                assert_eq!(i32::from(u[i]), i32::from(want) + 128);
            }
            for (b, sum) in sums.iter().enumerate() {
                let want: i32 = q[b * 32..(b + 1) * 32].iter().map(|&v| i32::from(v)).sum();
                assert_eq!(*sum, want);
            }
        }
    }

    #[test]
    fn attention_matches_the_portable_version() {
        if skip() {
            return;
        }
        for (hd, heads) in [(16usize, 2usize), (32, 12), (64, 3)] {
            let hidden = hd * heads;
            let segments = [(0usize, 1usize), (1, 6), (6, 22), (22, 23), (23, 140)];
            let tokens = 140;
            let qkv: Vec<f32> = values(tokens * 3 * hidden, hd as u32)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            for &(s0, s1) in &segments {
                for h in 0..heads {
                    let got = head_attention(&qkv, hidden, hd, h, s0, s1).unwrap();
                    let want = kernels::head_attention_generic(&qkv, hidden, hd, h, s0, s1);
                    assert_eq!(got.len(), want.len());
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() < 1e-5 * (1.0 + w.abs()),
                            "hd {hd} segment {s0}..{s1} head {h} value {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        assert!(head_attention(&[0.0; 3 * 48], 48, 24, 0, 0, 1).is_none());
    }
}
