//! SQL layer of K-means segmentation: `xsell.kmeans_fit` (in memory), `xsell.kmeans_train`
//! (streaming passes over a query), `xsell.kmeans_step`, `xsell.kmeans_assign`,
//! `xsell.kmeans_distance`, `xsell.kmeans_centroids`, `xsell.silhouette`, `xsell.kmeans_sweep`
//! and the type `xsell.kmeans_model`. The algorithms live in the pure crate `xsell-kmeans`.

mod step;
mod train;

use crate::common::partial::{self, Partial, read_u64};
use crate::common::{
    Code, F64Array, LazyJsonb, Options, agg_state, arg_f64array, check_interrupts, pool, progress, raise, raise_detail, trans_internal,
};
use pgrx::prelude::*;
use pgrx::{InOutFuncs, Internal, StringInfo};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::time::{Duration, Instant};
use xsell_kmeans::{Algorithm, Init, KMeansError, Params};

/// A trained K-means model (`xsell.kmeans_model`). Text form: JSON with k, dims, n_rows,
/// centroids, sizes, inertia, iterations, converged, seed, algorithm, init.
#[derive(PostgresType, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[inoutfuncs]
#[allow(non_camel_case_types)]
pub struct kmeans_model(pub xsell_kmeans::Model);

/// The Rust name of `xsell.kmeans_model` (the SQL type name comes from the struct's name).
pub type KmeansModel = kmeans_model;

impl InOutFuncs for kmeans_model {
    fn input(input: &CStr) -> Self {
        let text = input.to_str().unwrap_or_else(|_| {
            raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, "xsell.kmeans_model input is not valid UTF-8")
        });
        match xsell_kmeans::Model::from_json(text) {
            Ok(m) => kmeans_model(m),
            Err(e) => raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, format!("invalid xsell.kmeans_model: {e}")),
        }
    }

    fn output(&self, buffer: &mut StringInfo) {
        buffer.push_str(&self.0.to_json());
    }
}

/// Maps a crate error to an ERROR with its SQLSTATE.
pub(crate) fn km_error(e: KMeansError) -> ! {
    let code = match &e {
        KMeansError::InvalidParameter(_) => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        KMeansError::InvalidShape(_) | KMeansError::DimensionMismatch { .. } => Code::ERRCODE_ARRAY_ELEMENT_ERROR,
        KMeansError::NonFinite { .. } | KMeansError::ValueTooLarge { .. } => Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        KMeansError::LimitExceeded(_) => Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        KMeansError::InvalidModel(_) => Code::ERRCODE_INVALID_TEXT_REPRESENTATION,
        _ => Code::ERRCODE_DATA_EXCEPTION,
    };
    raise(code, e.to_string())
}

/// Progress callback for the pure crate: services cancel / statement_timeout on every report
/// and logs a NOTICE per iteration (at most ~4 per second) when `xsell.verbose` is on.
pub(crate) fn reporter(what: &'static str) -> impl FnMut(&xsell_kmeans::Progress) {
    let start = Instant::now();
    let mut last = start - Duration::from_secs(1);
    let mut phase = "";
    move |p| {
        check_interrupts();
        let milestone = p.center_shift.is_some() || p.phase == "finalize";
        // Each new phase (canonicalize, seeding, iteration, ...) is reported once, with the
        // time since training started; iterations at most ~4 times per second.
        let new_phase = p.phase != phase;
        phase = p.phase;
        if new_phase || (milestone && last.elapsed() >= Duration::from_millis(250)) {
            last = Instant::now();
            let s = start.elapsed().as_secs_f64();
            progress(|| match (p.phase, p.center_shift, p.inertia) {
                ("iteration", Some(shift), _) => format!(
                    "{what}: run {}/{} iteration {} center shift {shift:.6e} ({s:.2} s)",
                    p.run + 1,
                    p.n_runs,
                    p.iteration
                ),
                (_, _, Some(inertia)) => format!("{what}: run {}/{} done, inertia {inertia:.6} ({s:.2} s)", p.run + 1, p.n_runs),
                _ => format!("{what}: {} ({s:.2} s)", p.phase),
            });
        }
    }
}

/// Parses the options shared by `kmeans_fit`, `kmeans_train` and `kmeans_sweep`.
pub(crate) fn parse_params(k: i32, options: Option<&serde_json::Map<String, serde_json::Value>>, d: Option<usize>) -> Params {
    if k < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be at least 1, got {k}"));
    }
    let mut p = Params::new(k as usize);
    if let Some(map) = options {
        let mut o = Options::new(map, "kmeans");
        p.seed = o.int("seed", 0, i64::MIN, i64::MAX) as u64;
        p.max_iter = o.int("max_iter", 300, 1, 1_000_000) as usize;
        p.tol = o.float("tol", 1e-4, 0.0, f64::MAX);
        p.n_init = o.int("n_init", 1, 1, xsell_kmeans::MAX_N_INIT as i64) as usize;
        if let Some(alg) = o.string("algorithm") {
            p.algorithm = alg.parse::<Algorithm>().unwrap_or_else(|e| km_error(e));
        }
        if let Some(init) = o.value("init") {
            p.init = match init {
                serde_json::Value::String(s) if s == "k-means++" => Init::KMeansPlusPlus,
                serde_json::Value::String(s) if s == "random" => Init::Random,
                serde_json::Value::Array(rows) => Init::Explicit(explicit_centroids(rows, k as usize, d)),
                other => raise(
                    Code::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("kmeans option \"init\" must be \"k-means++\", \"random\" or a k x d array of centroids, got {other}"),
                ),
            };
        }
        o.finish();
    }
    p.validate().unwrap_or_else(|e| km_error(e));
    p
}

fn explicit_centroids(rows: &[serde_json::Value], k: usize, d: Option<usize>) -> Vec<f64> {
    let bad = |m: String| -> ! { raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("kmeans option \"init\": {m}")) };
    if rows.len() != k {
        bad(format!("expected {k} centroids (one per cluster), got {}", rows.len()));
    }
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(vals) = r.as_array() else { bad(format!("centroid {} is not an array", i + 1)) };
        if let Some(d) = d {
            if vals.len() != d {
                bad(format!("centroid {} has {} values, the rows have {d}", i + 1, vals.len()));
            }
        }
        for v in vals {
            match v.as_f64() {
                Some(x) if x.is_finite() => out.push(x),
                _ => bad(format!("centroid {} has a non-numeric or non-finite value {v}", i + 1)),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// kmeans_fit: gather the rows, then train in memory.

/// Writes the values as little-endian bytes into `out` (`8 * v.len()` long; a plain copy on
/// little-endian machines: the gathered rows of a parallel worker are tens of megabytes).
fn f64s_to_le_bytes(v: &[f64], out: &mut [u8]) {
    if cfg!(target_endian = "little") {
        // SAFETY: f64 has no padding and any byte is a valid u8; the slice covers v exactly.
        out.copy_from_slice(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) });
    } else {
        out.chunks_exact_mut(8).zip(v).for_each(|(c, x)| c.copy_from_slice(&x.to_le_bytes()));
    }
}

/// Appends the little-endian f64 values in `b` (a multiple of 8 bytes, any alignment) to `v`,
/// growing it to exactly the new length (large buffers grow by remapping, not copying).
fn extend_from_le_bytes(v: &mut Vec<f64>, b: &[u8]) {
    let n = b.len() / 8;
    v.reserve_exact(n);
    if cfg!(target_endian = "little") {
        // SAFETY: the spare capacity holds n f64 = n * 8 bytes, all written by the copy
        // before set_len, and every bit pattern is a valid f64.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().add(v.len()) as *mut u8, n * 8);
            v.set_len(v.len() + n);
        }
    } else {
        v.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())));
    }
}

/// `xsell.max_fit_memory_mb` in bytes.
fn fit_memory_limit() -> usize {
    (crate::guc::MAX_FIT_MEMORY_MB.get().max(1) as usize) << 20
}

#[derive(Default)]
struct FitState {
    /// When this backend's first row arrived (for the progress notice; not serialized).
    started: Option<Instant>,
    data: Vec<f64>,
    d: usize,
    k: Option<i32>,
    options: Option<String>,
    /// Rows not copied out of a partial state's serialized bytes (little-endian f64, any
    /// alignment), set only by `kmeans_fit_deserial`: the bytes belong to the tuple that the
    /// combine function consumes right after deserializing it, and the combine copies them
    /// once into the merged state (saves one copy of tens of megabytes per participant).
    borrowed: Option<(*const u8, usize)>,
}

impl FitState {
    fn add(&mut self, row: &[f64], k: Option<i32>, options: Option<&LazyJsonb>) {
        if self.k.is_none() {
            self.started = Some(Instant::now());
            let Some(k) = k else { raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "k must not be NULL") };
            self.k = Some(k);
            self.options = options.map(|o| serde_json::Value::Object(o.parse("kmeans options")).to_string());
            // Validate the options now, not after gathering a billion rows.
            let map = self.options_map();
            parse_params(k, map.as_ref(), Some(row.len()));
        }
        if self.d == 0 {
            self.d = row.len();
        } else if row.len() != self.d {
            raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("expected {} features, got {}", self.d, row.len()));
        }
        if (self.data.len() + row.len()) * 8 > fit_memory_limit() {
            raise_detail(
                Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "kmeans_fit needs more than xsell.max_fit_memory_mb = {} MB to hold the rows",
                    crate::guc::MAX_FIT_MEMORY_MB.get()
                ),
                "Use xsell.kmeans_train(query, k, options), which streams over the rows in passes with bounded memory, or raise xsell.max_fit_memory_mb.",
            );
        }
        self.data.extend_from_slice(row);
    }

    fn options_map(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.options.as_ref().map(|s| match serde_json::from_str(s) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "kmeans options must be a JSON object"),
        })
    }

    /// Length of the byte form (see [`FitState::write_bytes`]).
    fn byte_len(&self) -> usize {
        24 + self.options.as_ref().map_or(0, String::len) + self.data.len() * 8
    }

    /// The byte form of the partial state, into `out` (`byte_len()` long): k (i64, MIN when
    /// unset), d (u64), options length (u64, MAX when none), the options JSON, then the rows
    /// as little-endian f64.
    fn write_bytes(&self, out: &mut [u8]) {
        let opts = self.options.as_deref().unwrap_or_default().as_bytes();
        out[0..8].copy_from_slice(&self.k.map_or(i64::MIN, |k| k as i64).to_le_bytes());
        out[8..16].copy_from_slice(&(self.d as u64).to_le_bytes());
        out[16..24].copy_from_slice(&(if self.options.is_some() { opts.len() as u64 } else { u64::MAX }).to_le_bytes());
        out[24..24 + opts.len()].copy_from_slice(opts);
        f64s_to_le_bytes(&self.data, &mut out[24 + opts.len()..]);
    }

    /// The header of a byte form (k, d, options) as a state without rows, and the bytes of
    /// the rows (see [`FitState::write_bytes`]).
    fn parse_bytes(b: &[u8]) -> (FitState, &[u8]) {
        let corrupt = || -> ! { raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans_fit partial state") };
        let k = read_u64(b, 0).unwrap_or_else(|| corrupt()) as i64;
        let d = read_u64(b, 8).unwrap_or_else(|| corrupt()) as usize;
        let olen = read_u64(b, 16).unwrap_or_else(|| corrupt());
        let (options, rest) = if olen == u64::MAX {
            (None, &b[24..])
        } else {
            let end = 24usize.checked_add(olen as usize).filter(|&e| e <= b.len()).unwrap_or_else(|| corrupt());
            (Some(String::from_utf8(b[24..end].to_vec()).unwrap_or_else(|_| corrupt())), &b[end..])
        };
        if rest.len() % 8 != 0 {
            corrupt();
        }
        (FitState { d, k: (k != i64::MIN).then_some(k as i32), options, ..FitState::default() }, rest)
    }

    /// Copies rows still in serialized bytes into `data` (a state that lives on must own them).
    fn own(&mut self) {
        // SAFETY: see the field `borrowed`.
        let b = unsafe { borrowed_slice(self.borrowed.take()) };
        extend_from_le_bytes(&mut self.data, b);
    }
}

impl Partial for FitState {
    fn merge_from(&mut self, other: Self) {
        if other.k.is_none() {
            return;
        }
        if self.k.is_none() {
            self.k = other.k;
            self.options = other.options;
        }
        if self.d == 0 {
            self.d = other.d;
        } else if other.d != 0 && other.d != self.d {
            raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("expected {} features, got {}", self.d, other.d));
        }
        // SAFETY: `other` was deserialized for this combine call (see the field).
        let borrowed = unsafe { borrowed_slice(other.borrowed) };
        if self.data.len() * 8 + other.data.len() * 8 + borrowed.len() > fit_memory_limit() {
            raise(Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED, "kmeans_fit exceeds xsell.max_fit_memory_mb; use xsell.kmeans_train");
        }
        self.own();
        // Row order does not matter (training puts the rows in a canonical order): rows still
        // in the serialized bytes are copied once; of two buffers the larger one is kept and
        // the smaller one copied into it.
        extend_from_le_bytes(&mut self.data, borrowed);
        let mut other = other.data;
        if other.len() > self.data.len() {
            std::mem::swap(&mut self.data, &mut other);
        }
        self.data.extend_from_slice(&other);
    }

    fn to_bytes(&mut self) -> Vec<u8> {
        self.own();
        let mut out = vec![0u8; self.byte_len()];
        self.write_bytes(&mut out);
        out
    }

    fn from_bytes(b: &[u8]) -> Self {
        let (mut st, rows) = FitState::parse_bytes(b);
        extend_from_le_bytes(&mut st.data, rows);
        st
    }
}

/// The bytes of `FitState::borrowed` (empty when none).
///
/// # Safety
/// The bytes must still be alive: true while the combine call that consumes the deserialized
/// state runs (see the field).
unsafe fn borrowed_slice<'a>(b: Option<(*const u8, usize)>) -> &'a [u8] {
    match b {
        // SAFETY: caller's contract.
        Some((p, n)) => unsafe { std::slice::from_raw_parts(p, n) },
        None => &[],
    }
}

/// Transition of `xsell.kmeans_fit`: the row is appended to the gathered rows. One C-ABI
/// function serves both signatures, (internal, float8[], int) and (internal, float8[], int,
/// jsonb): it runs once per row, so it skips pgrx's per-call wrapper (see `trans_internal`).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn xsell_kmeans_fit_trans(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: declared in sql/kmeans.sql with the argument types read here.
    unsafe {
        trans_internal(fcinfo, FitState::default, |st| {
            let Some(f) = arg_f64array(fcinfo, 1) else { return };
            let k = (!pgrx::fcinfo::pg_arg_is_null(fcinfo, 2)).then(|| pgrx::fcinfo::pg_getarg::<i32>(fcinfo, 2)).flatten();
            let options = if (*fcinfo).nargs > 3 && !pgrx::fcinfo::pg_arg_is_null(fcinfo, 3) {
                LazyJsonb::from_polymorphic_datum(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 3), false, pg_sys::JSONBOID)
            } else {
                None
            };
            match f.finite_row("features") {
                crate::common::Row::Dense(r) => st.add(r, k, options.as_ref()),
                crate::common::Row::Sparse(_) => unreachable!("finite_row rejects NULL elements"),
            }
        })
    }
}
crate::finfo_v1!(pg_finfo_xsell_kmeans_fit_trans);

/// Combine function of `xsell.kmeans_fit`.
#[pg_extern(immutable, parallel_safe)]
fn kmeans_fit_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    partial::combine::<FitState>(a, b, fcinfo)
}

/// Serialization function of `xsell.kmeans_fit` (C ABI, declared in sql/kmeans.sql): a
/// parallel worker's gathered rows (tens of megabytes) are written once, straight into the
/// `bytea` that travels to the leader, in the byte form `FitState::from_bytes` reads.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn xsell_kmeans_fit_serial(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: declared (internal) -> bytea, strict; the state is a FitState.
    unsafe {
        let st = &mut *(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<FitState>());
        st.own();
        let len = st.byte_len();
        let total = len + pg_sys::VARHDRSZ;
        if total >= (1 << 30) {
            raise_detail(
                Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("a parallel worker gathered {} MB of kmeans_fit rows, more than one bytea holds", len >> 20),
                "Use xsell.kmeans_train(query, k, options), which streams, or SET max_parallel_workers_per_gather = 0.",
            );
        }
        let v = pg_sys::palloc(total) as *mut u8;
        crate::common::alloc::advise(v, total);
        pgrx::set_varsize_4b(v as *mut pg_sys::varlena, total as i32);
        st.write_bytes(std::slice::from_raw_parts_mut(v.add(pg_sys::VARHDRSZ), len));
        pg_sys::Datum::from(v)
    }
}
crate::finfo_v1!(pg_finfo_xsell_kmeans_fit_serial);

/// Deserialization function of `xsell.kmeans_fit`: the rows stay in the serialized bytes
/// (PostgreSQL passes the result straight to the combine function, which copies them once
/// into the merged state).
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_fit_deserial(bytes: &[u8], _unused: Internal) -> Internal {
    let (mut st, rows) = FitState::parse_bytes(bytes);
    st.borrowed = Some((rows.as_ptr(), rows.len()));
    Internal::new(st)
}

/// Final function of `xsell.kmeans_fit`: trains on the gathered rows with the compute pool.
#[pg_extern(immutable, parallel_safe)]
fn kmeans_fit_final(state: Internal) -> Option<KmeansModel> {
    let mut state = state;
    let st = unsafe { state.get_mut::<FitState>() }?;
    st.own();
    let k = st.k?;
    if st.data.is_empty() {
        return None;
    }
    let params = parse_params(k, st.options_map().as_ref(), Some(st.d));
    let data = std::mem::take(&mut st.data);
    let n = data.len() / st.d;
    let gathered = st.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    progress(|| {
        format!(
            "kmeans_fit: {n} rows x {} features gathered in {gathered:.2} s; k = {k}, {:?} init, {:?}",
            st.d,
            params.init.name(),
            params.algorithm
        )
    });
    let pool = pool();
    let model = xsell_kmeans::fit(data, st.d, &params, &pool, &mut reporter("kmeans_fit")).unwrap_or_else(|e| km_error(e));
    Some(kmeans_model(model))
}

// ---------------------------------------------------------------------------------------
// Using a model.

fn model_row<'a>(features: &'a F64Array<'a>, model: &xsell_kmeans::Model) -> &'a [f64] {
    match features.finite_row("features") {
        crate::common::Row::Dense(r) => {
            if r.len() != model.dims {
                raise(
                    Code::ERRCODE_ARRAY_ELEMENT_ERROR,
                    format!("expected {} features (the model's dimensions), got {}", model.dims, r.len()),
                );
            }
            r
        }
        crate::common::Row::Sparse(_) => unreachable!("finite_row rejects NULL elements"),
    }
}

/// `xsell.kmeans_assign(features, model)`: the nearest cluster (0..k-1).
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_assign(features: F64Array<'_>, model: KmeansModel) -> i32 {
    let row = model_row(&features, &model.0);
    model.0.assign(row).unwrap_or_else(|e| km_error(e)).0 as i32
}

/// `xsell.kmeans_distance(features, model)`: Euclidean distance to the nearest centroid.
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_distance(features: F64Array<'_>, model: KmeansModel) -> f64 {
    let row = model_row(&features, &model.0);
    model.0.assign(row).unwrap_or_else(|e| km_error(e)).1.sqrt()
}

/// `xsell.kmeans_clusters(model)`: one row per cluster.
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_clusters(
    model: KmeansModel,
) -> TableIterator<'static, (name!(cluster, i32), name!(size, i64), name!(centroid, Vec<f64>))> {
    let m = model.0;
    let rows: Vec<_> = (0..m.k).map(|j| (j as i32, m.sizes[j] as i64, m.centroid(j).to_vec())).collect();
    TableIterator::new(rows)
}

// ---------------------------------------------------------------------------------------
// Silhouette: a bounded, seeded, order-independent sample.

const SILHOUETTE_SEED: u64 = 0x5eed_5111;

#[derive(Default)]
struct SilState {
    res: Option<xsell_kmeans::Reservoir>,
}

impl Partial for SilState {
    fn merge_from(&mut self, other: Self) {
        match (&mut self.res, other.res) {
            (_, None) => {}
            (None, Some(o)) => self.res = Some(o),
            (Some(a), Some(b)) => a.merge(&b).unwrap_or_else(|e| km_error(e)),
        }
    }

    fn to_bytes(&mut self) -> Vec<u8> {
        serde_json::to_vec(&self.res).expect("reservoir serializes")
    }

    fn from_bytes(b: &[u8]) -> Self {
        let res: Option<xsell_kmeans::Reservoir> = serde_json::from_slice(b)
            .unwrap_or_else(|_| raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt silhouette partial state"));
        if let Some(r) = &res {
            r.validate().unwrap_or_else(|e| km_error(e));
        }
        SilState { res }
    }
}

fn sil_trans(state: Internal, features: Option<F64Array<'_>>, cluster: Option<i32>, sample_size: Option<i32>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, SilState::default) };
    let (Some(f), Some(c)) = (features, cluster) else { return state };
    if c < 0 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("cluster labels must be >= 0, got {c}"));
    }
    let m = sample_size.unwrap_or(10_000);
    if !(2..=1_000_000).contains(&m) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("sample_size must be between 2 and 1000000, got {m}"));
    }
    let row = match f.finite_row("features") {
        crate::common::Row::Dense(r) => r,
        crate::common::Row::Sparse(_) => unreachable!(),
    };
    let res = st.res.get_or_insert_with(|| {
        xsell_kmeans::Reservoir::new(m as usize, row.len(), SILHOUETTE_SEED, 0).unwrap_or_else(|e| km_error(e))
    });
    res.add(row, c as u32).unwrap_or_else(|e| km_error(e));
    state
}

/// Transition function of `xsell.silhouette(float8[], int)`.
#[pg_extern(immutable, parallel_safe, name = "silhouette_trans")]
fn silhouette_trans2(state: Internal, features: Option<F64Array<'_>>, cluster: Option<i32>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    sil_trans(state, features, cluster, None, fcinfo)
}

/// Transition function of `xsell.silhouette(float8[], int, int)`.
#[pg_extern(immutable, parallel_safe, name = "silhouette_trans")]
fn silhouette_trans3(
    state: Internal,
    features: Option<F64Array<'_>>,
    cluster: Option<i32>,
    sample_size: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    sil_trans(state, features, cluster, sample_size, fcinfo)
}

/// Combine function of `xsell.silhouette`.
#[pg_extern(immutable, parallel_safe)]
fn silhouette_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    partial::combine::<SilState>(a, b, fcinfo)
}

/// Serialization function of `xsell.silhouette`.
#[pg_extern(immutable, parallel_safe, strict)]
fn silhouette_serial(state: Internal) -> Vec<u8> {
    partial::serial::<SilState>(state)
}

/// Deserialization function of `xsell.silhouette`.
#[pg_extern(immutable, parallel_safe, strict)]
fn silhouette_deserial(bytes: &[u8], _unused: Internal) -> Internal {
    partial::deserial::<SilState>(bytes)
}

/// Final function of `xsell.silhouette`: the mean silhouette coefficient of the sample.
#[pg_extern(immutable, parallel_safe)]
fn silhouette_final(state: Internal) -> Option<f64> {
    let mut state = state;
    let st = unsafe { state.get_mut::<SilState>() }?;
    let res = st.res.take()?;
    let d = res_dims(&res);
    let (data, labels) = res.into_sample();
    let pool = pool();
    check_interrupts();
    Some(xsell_kmeans::silhouette(&data, d, &labels, &pool, &mut reporter("silhouette")).unwrap_or_else(|e| km_error(e)))
}

fn res_dims(res: &xsell_kmeans::Reservoir) -> usize {
    res.d
}

extension_sql_file!(
    "../../sql/kmeans.sql",
    name = "kmeans_aggregates",
    requires = [
        kmeans_model,
        kmeans_fit_combine,
        kmeans_fit_deserial,
        kmeans_fit_final,
        silhouette_trans2,
        silhouette_trans3,
        silhouette_combine,
        silhouette_serial,
        silhouette_deserial,
        silhouette_final,
        kmeans_assign,
        kmeans_distance,
        kmeans_clusters
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const ROWS: &str = "(VALUES ('{0,0}'::float8[]), ('{0,1}'), ('{10,10}'), ('{10,11}'), ('{10,12}')) v(z)";

    #[pg_test]
    fn fit_assigns_clusters_by_descending_size() {
        let sql = format!(
            "SELECT xsell.kmeans_assign('{{10,10.5}}', (SELECT xsell.kmeans_fit(z, 2) FROM {ROWS}))"
        );
        // The 3-row cluster is the largest, so it is cluster 0.
        assert_eq!(Spi::get_one::<i32>(&sql).unwrap(), Some(0));
    }

    #[pg_test]
    fn step_state_counts_and_moves_centroids() {
        let sql = format!("SELECT xsell.kmeans_step(z, '{{{{0,0}},{{10,10}}}}')::text FROM {ROWS}");
        let out = Spi::get_one::<String>(&sql).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["counts"], serde_json::json!([2, 3]));
        assert_eq!(v["centroids"][1], serde_json::json!([10.0, 11.0]));
    }

    #[pg_test(error = "query must be exactly one SELECT statement, got 2 statements")]
    fn train_refuses_more_than_one_statement() {
        Spi::run("SELECT xsell.kmeans_train('SELECT 1; SELECT 2', 2)").unwrap();
    }
}
