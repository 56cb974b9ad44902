//! `xsell.kmeans_step(features, centroids)`: one Lloyd pass as an aggregate whose state is a
//! plain fixed-size `bytea` (centroids, per-cluster sums and counts, inertia), updated in place.
//! A typed (non-`internal`) state is what Citus ships between nodes to push the partial
//! aggregate down to the workers; parallel workers exchange it without serial functions.
//!
//! Layout: the varlena header, 4 padding bytes (so the words are 8-byte aligned in the
//! MAXALIGNed allocations this module makes), then little-endian 8-byte words
//! `magic, k, d, n, inertia, centers[k*d], sums[k*d], counts[k]`. States that arrive from
//! elsewhere (another worker, another node) are read through a copy, never in place.

use super::km_error;
use crate::common::{Code, F64Array, Row, agg_context, raise};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, JsonB};
use serde_json::{Value, json};

const MAGIC: u64 = 0x584b_4d53_5445_5031; // "XKMSTEP1"
const HEADER_WORDS: usize = 5;

fn words(k: usize, d: usize) -> usize {
    HEADER_WORDS + 2 * k * d + k
}

const PAD: usize = 4;

/// The words of a state this module allocated (aligned, writable).
struct Step<'a> {
    w: &'a mut [u64],
}

impl<'a> Step<'a> {
    /// # Safety
    /// `ptr` must be a state allocated by [`new_state`] (4-byte header, 8-byte aligned words).
    unsafe fn own(ptr: *mut pg_sys::varlena) -> Step<'a> {
        unsafe {
            let data = (ptr as *mut u8).add(pg_sys::VARHDRSZ + PAD);
            let len = pgrx::varsize(ptr).saturating_sub(pg_sys::VARHDRSZ + PAD);
            if (data as usize) % 8 != 0 || len % 8 != 0 || len < HEADER_WORDS * 8 {
                raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans_step state");
            }
            let w = std::slice::from_raw_parts_mut(data as *mut u64, len / 8);
            check_words(w);
            Step { w }
        }
    }

    fn k(&self) -> usize {
        self.w[1] as usize
    }
    fn d(&self) -> usize {
        self.w[2] as usize
    }
}

fn check_words(w: &[u64]) {
    let (k, d) = (w.get(1).copied().unwrap_or(0) as usize, w.get(2).copied().unwrap_or(0) as usize);
    let ok = w.first() == Some(&MAGIC)
        && k > 0
        && d > 0
        && k.checked_mul(d).and_then(|kd| kd.checked_mul(2)).is_some()
        && words(k, d) == w.len();
    if !ok {
        raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans_step state");
    }
}

/// The words of any state's bytes (a copy: no alignment assumption), validated.
fn parse(bytes: &[u8]) -> Vec<u64> {
    let body = bytes.get(PAD..).unwrap_or_else(|| raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans_step state"));
    if body.len() % 8 != 0 {
        raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans_step state");
    }
    let w: Vec<u64> = body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    check_words(&w);
    w
}

/// Allocates a state for `centers` (k x d) in the aggregate memory context.
unsafe fn new_state(fcinfo: pg_sys::FunctionCallInfo, centers: &[f64], d: usize) -> *mut pg_sys::varlena {
    let k = centers.len() / d;
    let bytes = pg_sys::VARHDRSZ + PAD + words(k, d) * 8;
    unsafe {
        let cx = agg_context(fcinfo);
        let ptr = pg_sys::MemoryContextAllocZero(cx, bytes) as *mut pg_sys::varlena;
        pgrx::set_varsize_4b(ptr, bytes as i32);
        let w = std::slice::from_raw_parts_mut((ptr as *mut u8).add(pg_sys::VARHDRSZ + PAD) as *mut u64, words(k, d));
        w[0] = MAGIC;
        w[1] = k as u64;
        w[2] = d as u64;
        for (i, c) in centers.iter().enumerate() {
            w[HEADER_WORDS + i] = c.to_bits();
        }
        ptr
    }
}

fn centers_arg(c: &F64Array<'_>, d: usize) -> Vec<f64> {
    let dims = c.dims();
    let ok = match dims.as_slice() {
        [_, cols] => *cols == d,
        [n] => *n % d == 0 && *n > 0,
        _ => false,
    };
    if !ok {
        raise(
            Code::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("centroids must be a k x {d} array (one row per cluster), got dimensions {dims:?}"),
        );
    }
    match c.values() {
        Row::Dense(v) if v.iter().all(|x| x.is_finite()) => v.to_vec(),
        _ => raise(Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "centroids must be finite and not NULL"),
    }
}

/// Transition function of `xsell.kmeans_step`: (bytea state, float8[] row, float8[] centroids).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn xsell_kmeans_step_sfunc(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let state_null = pgrx::fcinfo::pg_arg_is_null(fcinfo, 0);
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, 1) || pgrx::fcinfo::pg_arg_is_null(fcinfo, 2) {
            return if state_null { pgrx::fcinfo::pg_return_null(fcinfo) } else { pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0) };
        }
        let f = F64Array::from_datum(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1), false).expect("row");
        let row = match f.finite_row("features") {
            Row::Dense(r) => r,
            Row::Sparse(_) => unreachable!("finite_row rejects NULL elements"),
        };
        let ptr = if state_null {
            let c = F64Array::from_datum(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 2), false).expect("centroids");
            new_state(fcinfo, &centers_arg(&c, row.len()), row.len())
        } else {
            agg_context(fcinfo); // in-place updates are only allowed inside an aggregate
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>()
        };
        let st = Step::own(ptr);
        let (k, d) = (st.k(), st.d());
        if row.len() != d {
            raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("expected {d} features, got {}", row.len()));
        }
        // The centroid words are f64 bit patterns: view them as f64 (same size and alignment).
        let centers = std::slice::from_raw_parts(st.w[HEADER_WORDS..].as_ptr() as *const f64, k * d);
        let (j, dist) = xsell_kmeans::nearest(row, centers).unwrap_or_else(|e| km_error(e));
        let sums = HEADER_WORDS + k * d + j * d;
        for (i, &x) in row.iter().enumerate() {
            st.w[sums + i] = (f64::from_bits(st.w[sums + i]) + x).to_bits();
        }
        st.w[HEADER_WORDS + 2 * k * d + j] += 1;
        st.w[3] += 1;
        st.w[4] = (f64::from_bits(st.w[4]) + dist).to_bits();
        pg_sys::Datum::from(ptr)
    }
}

/// Combine function of `xsell.kmeans_step`: adds the second state into the first.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn xsell_kmeans_step_combine(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let (a_null, b_null) = (pgrx::fcinfo::pg_arg_is_null(fcinfo, 0), pgrx::fcinfo::pg_arg_is_null(fcinfo, 1));
        if b_null {
            return if a_null { pgrx::fcinfo::pg_return_null(fcinfo) } else { pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0) };
        }
        let b = pg_sys::pg_detoast_datum(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1).cast_mut_ptr());
        let b_bytes = std::slice::from_raw_parts(pgrx::vardata_any(b) as *const u8, pgrx::varsize_any_exhdr(b));
        let sb = parse(b_bytes);
        let (k, d) = (sb[1] as usize, sb[2] as usize);
        if a_null {
            // Copy the second state into the aggregate context.
            let centers: Vec<f64> = sb[HEADER_WORDS..HEADER_WORDS + k * d].iter().map(|&x| f64::from_bits(x)).collect();
            let ptr = new_state(fcinfo, &centers, d);
            Step::own(ptr).w.copy_from_slice(&sb);
            return pg_sys::Datum::from(ptr);
        }
        agg_context(fcinfo);
        let a = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>();
        let sa = Step::own(a);
        if sa.k() != k || sa.d() != d {
            raise(Code::ERRCODE_DATA_EXCEPTION, "kmeans_step: partial states of different shapes");
        }
        sa.w[3] += sb[3];
        sa.w[4] = (f64::from_bits(sa.w[4]) + f64::from_bits(sb[4])).to_bits();
        let base = HEADER_WORDS + k * d;
        for i in 0..k * d {
            sa.w[base + i] = (f64::from_bits(sa.w[base + i]) + f64::from_bits(sb[base + i])).to_bits();
        }
        for j in 0..k {
            sa.w[base + k * d + j] += sb[base + k * d + j];
        }
        pg_sys::Datum::from(a)
    }
}

/// The pass result as JSON: counts, inertia, the new centroids (an empty cluster keeps its
/// centroid) and the total squared centroid shift.
pub(crate) fn step_result(bytes: &[u8]) -> Value {
    let words_vec = parse(bytes);
    let (k, d) = (words_vec[1] as usize, words_vec[2] as usize);
    let f = |from: usize, len: usize| -> Vec<f64> { words_vec[from..from + len].iter().map(|&b| f64::from_bits(b)).collect() };
    let centers = f(HEADER_WORDS, k * d);
    let sums = f(HEADER_WORDS + k * d, k * d);
    let counts: Vec<u64> = words_vec[HEADER_WORDS + 2 * k * d..].to_vec();
    let mut new = centers.clone();
    for j in 0..k {
        if counts[j] > 0 {
            for i in 0..d {
                new[j * d + i] = sums[j * d + i] / counts[j] as f64;
            }
        }
    }
    let shift = xsell_kmeans::center_shift_total(&centers, &new, d).unwrap_or_else(|e| km_error(e));
    json!({"k": k, "n": words_vec[3], "inertia": f64::from_bits(words_vec[4]), "counts": counts,
           "centroids": new.chunks(d).map(|c| json!(c)).collect::<Vec<_>>(), "center_shift": shift})
}

/// Final function of `xsell.kmeans_step`.
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_step_final(state: &[u8]) -> JsonB {
    JsonB(step_result(state))
}

crate::finfo_v1!(pg_finfo_xsell_kmeans_step_sfunc);
crate::finfo_v1!(pg_finfo_xsell_kmeans_step_combine);

// Keep IntoDatum in scope for the macro-generated code of this module.
#[allow(unused_imports)]
use IntoDatum as _;

extension_sql_file!(
    "../../sql/kmeans_step.sql",
    name = "kmeans_step_aggregate",
    requires = [kmeans_step_final]
);
