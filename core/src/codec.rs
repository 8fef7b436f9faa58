//! Reed-Solomon encode and reconstruct over caller-provided cell buffers.
//!
//! The bytes are exactly those of `reed-solomon-erasure` (GF(2^8), its Vandermonde-derived
//! systematic generator matrix; tests compare the two), computed with the crate's SIMD
//! multiply kernels (`galois_8::mul_slice` / `mul_slice_xor`, C with AVX2 under `simd-accel`).
//! What this module adds is the order of work:
//!
//! - **Column blocking.** The crate's `encode` runs one multiply pass per (input, output) pair
//!   over the whole cell, so with 1 MiB cells every pass streams megabytes through the caches
//!   (4+2: 8 passes, 12 MiB of traffic for 4 MiB of data). Reed-Solomon works on each byte
//!   column independently, so we run the same passes over [`COLUMN_BYTES`]-wide column blocks:
//!   the k input blocks and the output block being accumulated stay in L1/L2, and each input
//!   byte comes from memory once. The result is bit-identical.
//! - **Decode plans.** For an erasure pattern we invert the k×k sub-matrix once and keep the
//!   rows that produce each wanted missing shard (data or parity) directly from the k chosen
//!   present shards, cached by pattern. A reconstruct is then one column-blocked pass set, with
//!   no locking or allocation per block.
//!
//! Nothing here allocates on the encode / reconstruct path except the first use of a new
//! erasure pattern (a plan of at most 32×32 bytes) and [`ErasureCodec::reconstruct_options`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use reed_solomon_erasure::galois_8;

use crate::scheme::{Codec, ErasureScheme, MAX_TOTAL_SHARDS};

/// Width of one column block. Tuned with `cargo bench -p dogfs-core --bench codec`
/// (docs/erasure.md): (k + 1) blocks must sit in L1/L2 together, and a block must be long
/// enough that the per-call cost of the SIMD kernel is amortised. A multiple of 64, so only the
/// last block of a cell can end in the kernel's scalar tail.
pub const COLUMN_BYTES: usize = 8 * 1024;

/// Erasure patterns whose decode plans are kept; a cluster sees few distinct patterns at once.
const PLAN_CACHE_ENTRIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("cannot build a Reed-Solomon codec with k={k}, m={m}: need k >= 1, m >= 1, k+m <= 32")]
    Build { k: usize, m: usize },
    #[error("expected {expected} {role} cells, got {got}")]
    CellCount {
        role: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("expected {expected} {role} flags (one per shard), got {got}")]
    FlagCount {
        role: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("cell {index} is {len} bytes, but the cells of this stripe are {expected} bytes")]
    CellLength {
        index: usize,
        len: usize,
        expected: usize,
    },
    #[error("stripe buffer of {len} bytes does not hold {cells} equal cells")]
    StripeLength { len: usize, cells: usize },
    #[error("cannot reconstruct: {present} shards present, {needed} needed")]
    TooFewShards { present: usize, needed: usize },
    /// Cannot happen for a Reed-Solomon generator matrix (any k rows are independent); reported
    /// rather than trusted so that a bug can never produce wrong bytes.
    #[error("decode matrix for shards {rows:?} is singular")]
    DecodeMatrix { rows: Vec<usize> },
}

/// An erasure code over equal-length cells. Shard index i < k is data cell i; k ≤ i < k + m
/// is parity cell i − k. Every method validates counts and lengths and returns an error rather
/// than writing anything when they are wrong.
pub trait ErasureCodec: Send + Sync + fmt::Debug {
    /// k.
    fn data_shards(&self) -> usize;

    /// m.
    fn parity_shards(&self) -> usize;

    /// k + m.
    fn total_shards(&self) -> usize {
        self.data_shards() + self.parity_shards()
    }

    /// Computes the m parity cells of one stripe from its k data cells, overwriting `parity`.
    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError>;

    /// Rebuilds every shard i with `wanted[i] && !present[i]` from the present ones.
    /// `shards` holds k + m buffers; present and wanted-missing ones must have equal lengths,
    /// the others (neither present nor wanted) are not touched and may have any length.
    /// Fails with [`CodecError::TooFewShards`] when fewer than k are present, before writing.
    fn reconstruct_some(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
        wanted: &[bool],
    ) -> Result<(), CodecError>;

    /// [`Self::encode`] for a stripe held contiguously: `data` is k cells back to back and
    /// `parity` m cells back to back, all of `data.len() / k` bytes.
    fn encode_stripe(&self, data: &[u8], parity: &mut [u8]) -> Result<(), CodecError> {
        let (k, m) = (self.data_shards(), self.parity_shards());
        if !data.len().is_multiple_of(k) {
            return Err(CodecError::StripeLength {
                len: data.len(),
                cells: k,
            });
        }
        let cell = data.len() / k;
        if parity.len() != cell * m {
            return Err(CodecError::StripeLength {
                len: parity.len(),
                cells: m,
            });
        }
        if cell == 0 {
            return Ok(());
        }
        let mut d: [&[u8]; MAX_TOTAL_SHARDS] = [&[]; MAX_TOTAL_SHARDS];
        for (slot, chunk) in d.iter_mut().zip(data.chunks_exact(cell)) {
            *slot = chunk;
        }
        let mut p: [&mut [u8]; MAX_TOTAL_SHARDS] = Default::default();
        for (slot, chunk) in p.iter_mut().zip(parity.chunks_exact_mut(cell)) {
            *slot = chunk;
        }
        self.encode(&d[..k], &mut p[..m])
    }

    /// Rebuilds every missing shard, data and parity (repair).
    fn reconstruct(&self, shards: &mut [&mut [u8]], present: &[bool]) -> Result<(), CodecError> {
        let wanted = [true; MAX_TOTAL_SHARDS];
        let n = self.total_shards().min(MAX_TOTAL_SHARDS);
        self.reconstruct_some(shards, present, &wanted[..n])
    }

    /// Rebuilds only the missing data shards (a degraded read); parity buffers of missing
    /// parity shards are left alone and may be empty.
    fn reconstruct_data(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
    ) -> Result<(), CodecError> {
        let mut wanted = [false; MAX_TOTAL_SHARDS];
        let k = self.data_shards().min(MAX_TOTAL_SHARDS);
        wanted[..k].fill(true);
        let n = self.total_shards().min(MAX_TOTAL_SHARDS);
        self.reconstruct_some(shards, present, &wanted[..n])
    }

    /// Convenience for callers that hold shards as `Option<Vec<u8>>` (`None` = missing):
    /// allocates and fills the missing ones (all, or only data shards when `data_only`).
    /// Allocates, so it is for repair and tests rather than the streaming paths.
    fn reconstruct_options(
        &self,
        shards: &mut [Option<Vec<u8>>],
        data_only: bool,
    ) -> Result<(), CodecError> {
        let (k, n) = (self.data_shards(), self.total_shards());
        if shards.len() != n {
            return Err(CodecError::CellCount {
                role: "data + parity",
                expected: n,
                got: shards.len(),
            });
        }
        let present_count = shards.iter().filter(|s| s.is_some()).count();
        if present_count < k {
            return Err(CodecError::TooFewShards {
                present: present_count,
                needed: k,
            });
        }
        let len = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
        let mut present = [false; MAX_TOTAL_SHARDS];
        let mut wanted = [false; MAX_TOTAL_SHARDS];
        for (i, s) in shards.iter().enumerate() {
            present[i] = s.is_some();
            wanted[i] = !data_only || i < k;
        }
        // Check lengths before allocating, so a bad call changes nothing.
        for (index, s) in shards.iter().enumerate() {
            if let Some(s) = s
                && s.len() != len
            {
                return Err(CodecError::CellLength {
                    index,
                    len: s.len(),
                    expected: len,
                });
            }
        }
        for (i, s) in shards.iter_mut().enumerate() {
            if s.is_none() && wanted[i] {
                *s = Some(vec![0; len]);
            }
        }
        let mut bufs: [&mut [u8]; MAX_TOTAL_SHARDS] = Default::default();
        for (slot, s) in bufs.iter_mut().zip(shards.iter_mut()) {
            if let Some(s) = s {
                *slot = s.as_mut_slice();
            }
        }
        self.reconstruct_some(&mut bufs[..n], &present[..n], &wanted[..n])
    }
}

/// Builds the codec an object version's scheme names.
pub fn codec_for(scheme: &ErasureScheme) -> Result<Arc<dyn ErasureCodec>, CodecError> {
    match scheme.codec() {
        Codec::ReedSolomon => Ok(Arc::new(ReedSolomonCodec::from_scheme(scheme)?)),
    }
}

/// Rows that produce some shards from others: `outputs[r]` = Σ_j `coeffs[r][j]` · `inputs[j]`.
#[derive(Debug)]
struct Plan {
    /// The k present shard indices used as inputs, ascending.
    inputs: Vec<usize>,
    /// The shard indices produced, ascending.
    outputs: Vec<usize>,
    /// `outputs.len()` rows of k coefficients, row-major.
    coeffs: Vec<u8>,
}

/// Reed-Solomon over GF(2^8), bit-compatible with `reed_solomon_erasure::galois_8`.
pub struct ReedSolomonCodec {
    k: usize,
    m: usize,
    /// The m parity rows of the systematic generator matrix (data rows are the identity),
    /// row-major, m × k.
    parity_rows: Vec<u8>,
    /// Column block width, [`COLUMN_BYTES`] unless tuned.
    column: usize,
    /// Decode plans by (present mask, wanted-missing mask).
    plans: Mutex<HashMap<(u32, u32), Arc<Plan>>>,
}

impl fmt::Debug for ReedSolomonCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReedSolomonCodec")
            .field("k", &self.k)
            .field("m", &self.m)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

impl ReedSolomonCodec {
    pub fn new(k: usize, m: usize) -> Result<Self, CodecError> {
        if k < 1 || m < 1 || k + m > MAX_TOTAL_SHARDS {
            return Err(CodecError::Build { k, m });
        }
        // Take the generator matrix from the crate itself, so the bytes can never drift from
        // it: encoding unit vectors (data cell j = e_j) yields parity cell i = parity row i.
        let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m)
            .map_err(|_| CodecError::Build { k, m })?;
        let units: Vec<Vec<u8>> = (0..k)
            .map(|j| (0..k).map(|t| u8::from(t == j)).collect())
            .collect();
        let mut rows: Vec<Vec<u8>> = vec![vec![0; k]; m];
        rs.encode_sep(&units, &mut rows)
            .map_err(|_| CodecError::Build { k, m })?;
        Ok(Self {
            k,
            m,
            parity_rows: rows.concat(),
            column: COLUMN_BYTES,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Overrides the column block width (rounded up to a multiple of 64); for benchmarks that
    /// tune [`COLUMN_BYTES`]. Results are identical for every width.
    pub fn with_column_bytes(mut self, bytes: usize) -> Self {
        self.column = bytes.clamp(64, 1 << 30).next_multiple_of(64);
        self
    }

    pub fn from_scheme(scheme: &ErasureScheme) -> Result<Self, CodecError> {
        Self::new(usize::from(scheme.k()), usize::from(scheme.m()))
    }

    /// Row `i` of the full (k + m) × k generator matrix.
    fn generator_row(&self, i: usize) -> Vec<u8> {
        if i < self.k {
            (0..self.k).map(|j| u8::from(i == j)).collect()
        } else {
            let start = (i - self.k) * self.k;
            self.parity_rows[start..start + self.k].to_vec()
        }
    }

    fn plan(&self, present: u32, wanted_missing: u32) -> Result<Arc<Plan>, CodecError> {
        let key = (present, wanted_missing);
        // A poisoned lock only means another thread panicked mid-insert of an immutable value;
        // the map is still usable.
        if let Some(p) = self
            .plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(p));
        }
        let plan = Arc::new(self.build_plan(present, wanted_missing)?);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= PLAN_CACHE_ENTRIES {
            plans.clear();
        }
        plans.insert(key, Arc::clone(&plan));
        Ok(plan)
    }

    fn build_plan(&self, present: u32, wanted_missing: u32) -> Result<Plan, CodecError> {
        let (k, n) = (self.k, self.k + self.m);
        // The first k present shards: data shards come first, and each present data shard
        // contributes an identity row, which keeps the inversion cheap.
        let inputs: Vec<usize> = (0..n)
            .filter(|&i| present & (1 << i) != 0)
            .take(k)
            .collect();
        let outputs: Vec<usize> = (0..n).filter(|&i| wanted_missing & (1 << i) != 0).collect();
        let sub: Vec<Vec<u8>> = inputs.iter().map(|&i| self.generator_row(i)).collect();
        // decode[d] gives data shard d from the inputs.
        let decode = invert(sub).ok_or_else(|| CodecError::DecodeMatrix {
            rows: inputs.clone(),
        })?;
        let mut coeffs = Vec::with_capacity(outputs.len() * k);
        for &o in &outputs {
            if o < k {
                coeffs.extend_from_slice(&decode[o]);
            } else {
                // Parity straight from the inputs: (generator row) × decode.
                let g = self.generator_row(o);
                coeffs.extend(
                    (0..k).map(|j| {
                        (0..k).fold(0u8, |acc, t| acc ^ galois_8::mul(g[t], decode[t][j]))
                    }),
                );
            }
        }
        Ok(Plan {
            inputs,
            outputs,
            coeffs,
        })
    }
}

/// Gauss-Jordan inversion over GF(2^8); `None` when singular.
fn invert(mut a: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    let n = a.len();
    let mut inv: Vec<Vec<u8>> = (0..n)
        .map(|i| (0..n).map(|j| u8::from(i == j)).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).find(|&r| a[r][col] != 0)?;
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let scale = galois_8::div(1, a[col][col]);
        for j in 0..n {
            a[col][j] = galois_8::mul(a[col][j], scale);
            inv[col][j] = galois_8::mul(inv[col][j], scale);
        }
        for r in 0..n {
            let f = a[r][col];
            if r == col || f == 0 {
                continue;
            }
            for j in 0..n {
                let (x, y) = (galois_8::mul(f, a[col][j]), galois_8::mul(f, inv[col][j]));
                a[r][j] ^= x;
                inv[r][j] ^= y;
            }
        }
    }
    Some(inv)
}

/// outputs[r] = Σ_j coeffs[r·n + j] · inputs[j], one column block at a time. All slices have
/// length `len` (checked by the callers).
fn apply(coeffs: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]], len: usize, column: usize) {
    let n = inputs.len();
    let mut start = 0;
    while start < len {
        let end = (start + column).min(len);
        for (row, out) in coeffs.chunks_exact(n).zip(outputs.iter_mut()) {
            let out = &mut out[start..end];
            let mut written = false;
            for (&c, input) in row.iter().zip(inputs) {
                let input = &input[start..end];
                match (c, written) {
                    (0, _) => continue,
                    (_, false) => galois_8::mul_slice(c, input, out),
                    (_, true) => galois_8::mul_slice_xor(c, input, out),
                }
                written = true;
            }
            if !written {
                out.fill(0);
            }
        }
        start = end;
    }
}

impl ErasureCodec for ReedSolomonCodec {
    fn data_shards(&self) -> usize {
        self.k
    }

    fn parity_shards(&self) -> usize {
        self.m
    }

    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        check_count("data", self.k, data.len())?;
        check_count("parity", self.m, parity.len())?;
        let len = data[0].len();
        for (index, cell) in data.iter().enumerate() {
            check_len(index, cell.len(), len)?;
        }
        for (i, cell) in parity.iter().enumerate() {
            check_len(self.k + i, cell.len(), len)?;
        }
        apply(&self.parity_rows, data, parity, len, self.column);
        Ok(())
    }

    fn reconstruct_some(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
        wanted: &[bool],
    ) -> Result<(), CodecError> {
        let n = self.k + self.m;
        check_count("data + parity", n, shards.len())?;
        if present.len() != n {
            return Err(CodecError::FlagCount {
                role: "present",
                expected: n,
                got: present.len(),
            });
        }
        if wanted.len() != n {
            return Err(CodecError::FlagCount {
                role: "wanted",
                expected: n,
                got: wanted.len(),
            });
        }
        let (mut present_mask, mut missing_mask) = (0u32, 0u32);
        for i in 0..n {
            if present[i] {
                present_mask |= 1 << i;
            } else if wanted[i] {
                missing_mask |= 1 << i;
            }
        }
        let present_count = present_mask.count_ones() as usize;
        if present_count < self.k {
            return Err(CodecError::TooFewShards {
                present: present_count,
                needed: self.k,
            });
        }
        let mut len = None;
        for (index, s) in shards.iter().enumerate() {
            if (present_mask | missing_mask) & (1 << index) != 0 {
                let expected = *len.get_or_insert(s.len());
                check_len(index, s.len(), expected)?;
            }
        }
        let len = len.unwrap_or(0);
        if missing_mask == 0 || len == 0 {
            return Ok(());
        }
        let plan = self.plan(present_mask, missing_mask)?;
        let mut inputs: [&[u8]; MAX_TOTAL_SHARDS] = [&[]; MAX_TOTAL_SHARDS];
        let mut outputs: [&mut [u8]; MAX_TOTAL_SHARDS] = Default::default();
        let (mut ni, mut no) = (0, 0);
        // Inputs and outputs are disjoint shards, so one pass of iter_mut hands out both.
        for (i, s) in shards.iter_mut().enumerate() {
            if plan.inputs.get(ni) == Some(&i) {
                inputs[ni] = &**s;
                ni += 1;
            } else if plan.outputs.get(no) == Some(&i) {
                outputs[no] = &mut **s;
                no += 1;
            }
        }
        apply(
            &plan.coeffs,
            &inputs[..ni],
            &mut outputs[..no],
            len,
            self.column,
        );
        Ok(())
    }
}

fn check_count(role: &'static str, expected: usize, got: usize) -> Result<(), CodecError> {
    if expected == got {
        Ok(())
    } else {
        Err(CodecError::CellCount {
            role,
            expected,
            got,
        })
    }
}

fn check_len(index: usize, len: usize, expected: usize) -> Result<(), CodecError> {
    if len == expected {
        Ok(())
    } else {
        Err(CodecError::CellLength {
            index,
            len,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reed_solomon_erasure::galois_8::ReedSolomon;

    fn random_cells(count: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut x = seed | 1;
        (0..count)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        // xorshift: cheap, deterministic test data.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    fn encode_vecs(codec: &ReedSolomonCodec, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let len = data[0].len();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = vec![vec![0xAAu8; len]; codec.m];
        let mut prefs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&refs, &mut prefs).unwrap();
        parity
    }

    #[test]
    fn matches_the_crate_across_column_blocks() {
        // Lengths around the column width and the 32-byte SIMD width.
        for (k, m) in [(1, 1), (4, 2), (6, 3), (10, 4), (17, 15)] {
            let codec = ReedSolomonCodec::new(k, m).unwrap();
            let rs = ReedSolomon::new(k, m).unwrap();
            for len in [
                1,
                31,
                33,
                4096,
                COLUMN_BYTES - 1,
                COLUMN_BYTES + 65,
                3 * COLUMN_BYTES,
            ] {
                let data = random_cells(k, len, (k * 1000 + len) as u64);
                let ours = encode_vecs(&codec, &data);
                let mut theirs = vec![vec![0u8; len]; m];
                rs.encode_sep(&data, &mut theirs).unwrap();
                assert_eq!(ours, theirs, "k={k} m={m} len={len}");
            }
        }
    }

    #[test]
    fn encode_stripe_matches_encode() {
        let codec = ReedSolomonCodec::new(4, 2).unwrap();
        let data = random_cells(4, 1000, 7);
        let flat = data.concat();
        let mut parity = vec![0u8; 2000];
        codec.encode_stripe(&flat, &mut parity).unwrap();
        assert_eq!(parity, encode_vecs(&codec, &data).concat());
        assert!(matches!(
            codec.encode_stripe(&flat[..999], &mut parity),
            Err(CodecError::StripeLength { .. })
        ));
        assert!(matches!(
            codec.encode_stripe(&flat, &mut parity[..1999]),
            Err(CodecError::StripeLength { .. })
        ));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let codec = ReedSolomonCodec::new(4, 2).unwrap();
        let data = random_cells(4, 64, 1);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = vec![vec![0u8; 64]; 2];
        let mut prefs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(matches!(
            codec.encode(&refs[..3], &mut prefs),
            Err(CodecError::CellCount {
                expected: 4,
                got: 3,
                ..
            })
        ));
        let mut short = [0u8; 63];
        let mut bad: Vec<&mut [u8]> = vec![&mut short[..], &mut []];
        assert!(matches!(
            codec.encode(&refs, &mut bad),
            Err(CodecError::CellLength {
                index: 4,
                len: 63,
                expected: 64
            })
        ));
        assert!(matches!(
            ReedSolomonCodec::new(0, 2),
            Err(CodecError::Build { .. })
        ));
        assert!(matches!(
            ReedSolomonCodec::new(30, 3),
            Err(CodecError::Build { .. })
        ));
        let mut shards = vec![Some(vec![0u8; 8]); 6];
        shards[5] = Some(vec![0u8; 9]);
        shards[0] = None;
        assert!(matches!(
            codec.reconstruct_options(&mut shards, false),
            Err(CodecError::CellLength { index: 5, .. })
        ));
        assert!(shards[0].is_none(), "a failed call must not fill anything");
    }

    #[test]
    fn too_few_shards_never_writes() {
        let codec = ReedSolomonCodec::new(4, 2).unwrap();
        let data = random_cells(4, 100, 3);
        let parity = encode_vecs(&codec, &data);
        let mut all: Vec<Vec<u8>> = data.iter().chain(&parity).cloned().collect();
        let present = [true, false, false, false, true, true];
        let before = all.clone();
        let mut refs: Vec<&mut [u8]> = all.iter_mut().map(Vec::as_mut_slice).collect();
        let err = codec.reconstruct(&mut refs, &present).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooFewShards {
                present: 3,
                needed: 4
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot reconstruct: 3 shards present, 4 needed"
        );
        assert_eq!(all, before);
    }

    #[test]
    fn reconstruct_data_leaves_parity_alone() {
        let codec = ReedSolomonCodec::new(4, 2).unwrap();
        let data = random_cells(4, 300, 5);
        let parity = encode_vecs(&codec, &data);
        let mut d0 = vec![0u8; 300];
        let (mut d1, mut d2, mut d3) = (data[1].clone(), data[2].clone(), data[3].clone());
        let mut p0 = parity[0].clone();
        let mut shards: Vec<&mut [u8]> = vec![&mut d0, &mut d1, &mut d2, &mut d3, &mut p0, &mut []];
        codec
            .reconstruct_data(&mut shards, &[false, true, true, true, true, false])
            .unwrap();
        assert_eq!(d0, data[0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any pattern of at most m losses decodes to the original (checked against the crate's
        /// own reconstruct too); more than m is an error.
        #[test]
        fn any_m_losses_decode(
            k in 1usize..=12,
            m in 1usize..=8,
            len in 1usize..600,
            lost_seed: u64,
            seed: u64,
        ) {
            // Narrow columns, so short cells still cross block boundaries.
            let codec = ReedSolomonCodec::new(k, m)
                .unwrap()
                .with_column_bytes(64 * (1 + (seed % 4) as usize));
            let data = random_cells(k, len, seed);
            let parity = encode_vecs(&codec, &data);
            let original: Vec<Vec<u8>> = data.into_iter().chain(parity).collect();
            let n = k + m;
            // Pick between 0 and m + 1 lost shards from the seed.
            let lose = (lost_seed % (m as u64 + 2)) as usize;
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = lost_seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let lost = &order[..lose.min(n)];
            let mut shards: Vec<Option<Vec<u8>>> = original.iter().cloned().map(Some).collect();
            for &i in lost {
                shards[i] = None;
            }
            let mut theirs = shards.clone();
            let r = codec.reconstruct_options(&mut shards, false);
            if lost.len() <= m {
                r.unwrap();
                let got: Vec<Vec<u8>> = shards.into_iter().map(Option::unwrap).collect();
                prop_assert_eq!(&got, &original);
                ReedSolomon::new(k, m).unwrap().reconstruct(&mut theirs).unwrap();
                let theirs: Vec<Vec<u8>> = theirs.into_iter().map(Option::unwrap).collect();
                prop_assert_eq!(&theirs, &original);
            } else {
                prop_assert_eq!(
                    r,
                    Err(CodecError::TooFewShards { present: n - lost.len(), needed: k })
                );
            }
        }
    }
}
