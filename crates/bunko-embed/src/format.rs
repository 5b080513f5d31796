//! The `E5S1` file: a little-endian header, the unigram vocabulary (byte offsets, scores,
//! piece bytes), a per-code-point normalisation map, and a directory of named tensors
//! (`emb.word`, `emb.pos`, `l{N}.q.w`, …) with byte offsets into the same file. Every read is
//! bounds-checked: a truncated or foreign file is a [`EmbedError::Format`], never a panic.

use crate::EmbedError;

pub const MAGIC: &[u8; 4] = b"E5S1";
/// Values per quantisation block, in the file and in the kernels.
pub const QK: usize = 32;
/// Bytes per `Q4_0` block: an f16 scale and 16 bytes of nibbles.
pub const Q4_BLOCK_BYTES: usize = 18;

pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated(what: &str) -> EmbedError {
    EmbedError::Format(format!("truncated file while reading {what}"))
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EmbedError> {
        let end = self.pos.checked_add(n).ok_or_else(|| truncated(what))?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EmbedError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8, EmbedError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, EmbedError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, EmbedError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, EmbedError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn f32(&mut self, what: &str) -> Result<f32, EmbedError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    /// A non-negative count or dimension, bounded so that later arithmetic cannot overflow.
    pub fn count(&mut self, what: &str, max: usize) -> Result<usize, EmbedError> {
        let v = i32::from_le_bytes(self.array(what)?);
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| EmbedError::Format(format!("{what} = {v} is out of range")))
    }
}

/// Little-endian f32s from raw bytes.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// IEEE 754 half → single precision (all cases: zero, subnormal, normal, inf/NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m · 2^-24, exactly representable in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// One entry of the tensor directory.
pub struct Tensor<'a> {
    pub name: String,
    pub dtype: u8,
    pub elements: usize,
    pub bytes: &'a [u8],
}

/// Reads the directory: `u16 name_len, name, u8 dtype, u32 elements, u64 offset, u64 nbytes`.
pub fn read_directory<'a>(
    c: &mut Cursor<'_>,
    file: &'a [u8],
) -> Result<Vec<Tensor<'a>>, EmbedError> {
    let n = c.count("tensor count", 100_000)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = usize::from(c.u16("tensor name length")?);
        let name = String::from_utf8_lossy(c.take(len, "tensor name")?).into_owned();
        let dtype = c.u8("tensor dtype")?;
        let elements = c.u32("tensor size")? as usize;
        let off = usize::try_from(c.u64("tensor offset")?).unwrap_or(usize::MAX);
        let nbytes = usize::try_from(c.u64("tensor length")?).unwrap_or(usize::MAX);
        let bytes = off
            .checked_add(nbytes)
            .and_then(|end| file.get(off..end))
            .ok_or_else(|| EmbedError::Format(format!("tensor {name} lies outside the file")))?;
        out.push(Tensor {
            name,
            dtype,
            elements,
            bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversion_covers_every_class() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal
        assert_eq!(f16_to_f32(0x8001), -5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn short_reads_are_errors_not_panics() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert!(c.u32("x").is_err());
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(c.count("n", 10).is_err(), "negative counts are refused");
    }
}
