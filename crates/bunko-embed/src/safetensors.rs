//! The safetensors container: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the data. F32, F16 and BF16 tensors are read as
//! f32; a range outside the file or a size that disagrees with the shape is an error.

use crate::EmbedError;
use crate::format::f16_to_f32;
use std::collections::HashMap;

pub struct SafeTensors<'a> {
    data: &'a [u8],
    entries: HashMap<String, Entry>,
}

struct Entry {
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl<'a> SafeTensors<'a> {
    pub fn parse(file: &'a [u8]) -> Result<Self, EmbedError> {
        let bad = |m: String| EmbedError::Format(format!("safetensors: {m}"));
        let len = file
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| bad("file shorter than its header".into()))?;
        let len = usize::try_from(len).map_err(|_| bad("header length out of range".into()))?;
        let header = len
            .checked_add(8)
            .and_then(|end| file.get(8..end))
            .ok_or_else(|| bad("header runs past the end of the file".into()))?;
        let data = &file[8 + len..];
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let mut entries = HashMap::new();
        for (name, v) in json {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v["dtype"].as_str().unwrap_or_default().to_owned();
            let shape: Vec<usize> = v["shape"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_u64().map(|d| d as usize))
                        .collect()
                })
                .unwrap_or_default();
            let offs = v["data_offsets"].as_array();
            let (start, end) = match offs.map(|o| {
                (
                    o.first().and_then(|x| x.as_u64()),
                    o.get(1).and_then(|x| x.as_u64()),
                )
            }) {
                Some((Some(s), Some(e))) if s <= e && (e as usize) <= data.len() => {
                    (s as usize, e as usize)
                }
                _ => return Err(bad(format!("tensor {name} has no valid byte range"))),
            };
            entries.insert(
                name,
                Entry {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok(Self { data, entries })
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor as f32 values, checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| EmbedError::Format(format!("tensor {name} is missing")))?;
        if e.shape != shape {
            return Err(EmbedError::Format(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                e.shape
            )));
        }
        let n: usize = shape.iter().product();
        let bytes = &self.data[e.start..e.end];
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => {
                return Err(EmbedError::Format(format!(
                    "tensor {name}: dtype {other} is not supported"
                )));
            }
        };
        if bytes.len() != n * width {
            return Err(EmbedError::Format(format!(
                "tensor {name}: size disagrees with its shape"
            )));
        }
        Ok(match e.dtype.as_str() {
            "F32" => crate::format::f32s(bytes),
            "F16" => bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                .collect(),
        })
    }
}
