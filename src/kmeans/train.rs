//! The scalable path: `xsell.kmeans_train` streams over a query in passes. Every pass is one
//! aggregate over the query's rows with a fixed-size partial state (per-cluster sums and
//! counts, or a handful of sampled rows), so parallel workers share the scan and nothing but
//! the centroids is ever held in memory. Seeding is k-means|| (Bahmani et al.): one pass for
//! the first center and the feature moments, a cost pass, a few oversampling rounds, a
//! weighting pass, then an in-memory weighted k-means++ over the candidates; then Lloyd passes.

use super::{KmeansModel, kmeans_model, km_error, parse_params, reporter};
use crate::common::partial::{self, Partial};
use crate::common::{Code, F64Array, LazyJsonb, Row, agg_state, check_interrupts, pool, progress, raise};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{Internal, JsonB};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use xsell_kmeans::{FeatureMoments, FirstCenter, Init};

/// Oversampling rounds of k-means|| (Bahmani et al. find 5 rounds enough).
const SAMPLING_ROUNDS: u32 = 5;

/// The state of one pass.
#[derive(Default, Serialize, Deserialize)]
enum PassState {
    #[default]
    Empty,
    /// First pass: row count, first center (smallest row hash) and feature moments.
    Init { first: FirstCenter, moments: Option<FeatureMoments> },
    /// k-means|| oversampling round: cost w.r.t. `centers` and the rows sampled.
    Sample { centers: Vec<f64>, phi: f64, l: f64, seed: u64, round: u32, cost: f64, n: u64, sampled: Vec<f64>, d: usize },
}

impl Partial for PassState {
    fn merge_from(&mut self, other: Self) {
        use PassState::*;
        match (&mut *self, other) {
            (_, Empty) => {}
            (Empty, o) => *self = o,
            (Init { first, moments }, Init { first: f2, moments: m2 }) => {
                first.merge(&f2).unwrap_or_else(|e| km_error(e));
                match (moments.as_mut(), m2) {
                    (_, None) => {}
                    (None, Some(m)) => *moments = Some(m),
                    (Some(a), Some(b)) => a.merge(&b).unwrap_or_else(|e| km_error(e)),
                }
            }
            (Sample { cost, n, sampled, .. }, Sample { cost: c2, n: n2, sampled: s2, .. }) => {
                *cost += c2;
                *n += n2;
                sampled.extend_from_slice(&s2);
            }
            _ => raise(Code::ERRCODE_DATA_EXCEPTION, "kmeans pass: mismatched partial states"),
        }
    }

    fn to_bytes(&mut self) -> Vec<u8> {
        serde_json::to_vec(self).expect("pass state serializes")
    }

    fn from_bytes(b: &[u8]) -> Self {
        serde_json::from_slice(b).unwrap_or_else(|_| raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt kmeans pass state"))
    }
}

fn dense<'a>(f: &'a F64Array<'a>) -> &'a [f64] {
    match f.finite_row("features") {
        Row::Dense(r) => r,
        Row::Sparse(_) => unreachable!("finite_row rejects NULL elements"),
    }
}

/// Transition of the internal pass aggregate `xsell.kmeans_pass(features, spec)`.
#[pg_extern(immutable, parallel_safe)]
fn kmeans_pass_trans(state: Internal, features: Option<F64Array<'_>>, spec: Option<LazyJsonb>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, PassState::default) };
    let (Some(f), Some(spec)) = (features, spec) else { return state };
    let row = dense(&f);
    if let PassState::Empty = st {
        *st = start_pass(&spec.parse("kmeans pass"), row.len());
    }
    match st {
        PassState::Init { first, moments } => {
            first.add(row).unwrap_or_else(|e| km_error(e));
            moments
                .get_or_insert_with(|| FeatureMoments::new(row.len()).unwrap_or_else(|e| km_error(e)))
                .add(row)
                .unwrap_or_else(|e| km_error(e));
        }
        PassState::Sample { centers, phi, l, seed, round, cost, n, sampled, d } => {
            if row.len() != *d {
                raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("expected {d} features, got {}", row.len()));
            }
            let (_, dist) = xsell_kmeans::nearest(row, centers).unwrap_or_else(|e| km_error(e));
            *cost += dist;
            *n += 1;
            if xsell_kmeans::parallel_sample(row, centers, *phi, *l, *seed, *round).unwrap_or_else(|e| km_error(e)) {
                sampled.extend_from_slice(row);
            }
        }
        PassState::Empty => unreachable!(),
    }
    state
}

fn start_pass(spec: &serde_json::Map<String, Value>, d: usize) -> PassState {
    let num = |k: &str| spec.get(k).and_then(Value::as_f64).unwrap_or_else(|| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("kmeans pass: missing {k}")));
    let centers = || -> Vec<f64> {
        let v: Vec<f64> = spec
            .get("centers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if v.is_empty() || v.len() % d != 0 {
            raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("kmeans pass: centers do not match rows of {d} features"));
        }
        v
    };
    match spec.get("phase").and_then(Value::as_str) {
        Some("init") => PassState::Init { first: FirstCenter::new(num("seed") as u64), moments: None },
        Some("sample") => PassState::Sample {
            centers: centers(),
            phi: num("phi"),
            l: num("l"),
            seed: spec.get("seed").and_then(Value::as_u64).unwrap_or(0),
            round: num("round") as u32,
            cost: 0.0,
            n: 0,
            sampled: Vec::new(),
            d,
        },
        _ => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "kmeans pass: unknown phase"),
    }
}

fn nested(values: &[f64], d: usize) -> Value {
    Value::Array(values.chunks(d.max(1)).map(|c| json!(c)).collect())
}

fn finish_pass(st: &mut PassState) -> Option<Value> {
    Some(match std::mem::take(st) {
        PassState::Empty => return None,
        PassState::Init { first, moments } => {
            let m = moments?;
            let mean_var = m.variances().iter().sum::<f64>() / m.d as f64;
            json!({"n": m.n, "d": m.d, "first_center": first.into_row(), "mean_variance": mean_var})
        }
        PassState::Sample { cost, n, sampled, d, .. } => json!({"cost": cost, "n": n, "sampled": nested(&sampled, d)}),
    })
}

/// Final function of `xsell.kmeans_pass`.
#[pg_extern(immutable, parallel_safe)]
fn kmeans_pass_final(state: Internal) -> Option<JsonB> {
    let mut state = state;
    let st = unsafe { state.get_mut::<PassState>() }?;
    finish_pass(st).map(JsonB)
}

/// Combine function of `xsell.kmeans_pass`.
#[pg_extern(immutable, parallel_safe)]
fn kmeans_pass_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    partial::combine::<PassState>(a, b, fcinfo)
}

/// Serialization function of `xsell.kmeans_pass`.
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_pass_serial(state: Internal) -> Vec<u8> {
    partial::serial::<PassState>(state)
}

/// Deserialization function of `xsell.kmeans_pass`.
#[pg_extern(immutable, parallel_safe, strict)]
fn kmeans_pass_deserial(bytes: &[u8], _unused: Internal) -> Internal {
    partial::deserial::<PassState>(bytes)
}

// ---------------------------------------------------------------------------------------

/// Checks that `query` is exactly one SELECT statement (PostgreSQL's own parser decides), so
/// it can only ever be run as a row source of the passes, with the caller's privileges.
pub(crate) fn validate_query(query: &str) {
    let c = std::ffi::CString::new(query)
        .unwrap_or_else(|_| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "query must not contain NUL characters"));
    // SAFETY: raw_parser only reads the string; a syntax error raises an ERROR.
    unsafe {
        let list = pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let n = if list.is_null() { 0 } else { (*list).length };
        if n != 1 {
            raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("query must be exactly one SELECT statement, got {n} statements"));
        }
        let raw = pg_sys::list_nth(list, 0) as *mut pg_sys::RawStmt;
        if (*(*raw).stmt).type_ != pg_sys::NodeTag::T_SelectStmt {
            raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "query must be a SELECT statement returning one float8[] column");
        }
    }
}

/// Runs one Lloyd pass (`xsell.kmeans_step`, typed fixed-size state) over the query.
pub(crate) fn run_step(query: &str, centers: &[f64]) -> Option<Value> {
    check_interrupts();
    let sql = format!("SELECT xsell.kmeans_step(xsell_q.f, $1) FROM (\n{query}\n) AS xsell_q(f)");
    let args = [DatumWithOid::from(centers.to_vec())];
    let out: Option<JsonB> = Spi::connect(|client| client.select(&sql, None, &args)?.first().get_one::<JsonB>())
        .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("kmeans_train: the query failed: {e}")));
    out.map(|j| j.0)
}

/// Runs one pass over the query and returns its JSON result (NULL when the query has no rows).
pub(crate) fn run_pass(query: &str, spec: &Value) -> Option<Value> {
    check_interrupts();
    let sql = format!("SELECT xsell.kmeans_pass(xsell_q.f, $1::jsonb)::text FROM (\n{query}\n) AS xsell_q(f)");
    let spec = spec.to_string();
    let args = [DatumWithOid::from(spec.as_str())];
    let out: Option<String> = Spi::connect(|client| client.select(&sql, None, &args)?.first().get_one::<String>())
        .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("kmeans_train: the query failed: {e}")));
    out.map(|s| serde_json::from_str(&s).expect("pass result is JSON"))
}

fn flat(v: &Value) -> Vec<f64> {
    v.as_array().map(|rows| rows.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).filter_map(|x| x.as_f64()).collect()).unwrap_or_default()
}

/// Trains a model with passes over `query` (see the module docs).
pub(crate) fn train(query: &str, k: i32, options: Option<&serde_json::Map<String, Value>>) -> xsell_kmeans::Model {
    validate_query(query);
    let params = parse_params(k, options, None);
    let k = params.k;
    let seed = params.seed;
    let init = run_pass(query, &json!({"phase": "init", "seed": seed}))
        .unwrap_or_else(|| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "kmeans_train: the query returned no rows"));
    let n = init["n"].as_u64().unwrap_or(0);
    let d = init["d"].as_u64().unwrap_or(0) as usize;
    let tol_abs = params.tol * init["mean_variance"].as_f64().unwrap_or(0.0);
    progress(|| format!("kmeans_train: {n} rows x {d} features, k = {k}"));
    let pool = pool();

    let mut centers: Vec<f64> = match &params.init {
        Init::Explicit(c) => {
            if c.len() != k * d {
                raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("init: expected {k} centroids of {d} values"));
            }
            c.clone()
        }
        Init::Random => raise(Code::ERRCODE_FEATURE_NOT_SUPPORTED, "kmeans_train seeds with k-means|| or explicit centroids; init \"random\" is only available in kmeans_fit"),
        Init::KMeansPlusPlus => {
            let mut cands: Vec<f64> = init["first_center"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
            let l = 2.0 * k as f64;
            let mut phi = run_step(query, &cands)
                .and_then(|v| v["inertia"].as_f64())
                .unwrap_or(0.0);
            let mut round = 0;
            while round < SAMPLING_ROUNDS || (cands.len() / d < k && round < 4 * SAMPLING_ROUNDS) {
                if phi <= 0.0 {
                    break;
                }
                let res = run_pass(query, &json!({"phase": "sample", "centers": cands, "phi": phi, "l": l, "seed": seed, "round": round}))
                    .unwrap_or_else(|| raise(Code::ERRCODE_DATA_EXCEPTION, "kmeans_train: the query returned no rows in a later pass"));
                let sampled = flat(&res["sampled"]);
                progress(|| format!("kmeans_train: k-means|| round {} sampled {} candidates", round + 1, sampled.len() / d));
                // The pass measured the cost of the previous candidates: use it for the next round.
                phi = res["cost"].as_f64().unwrap_or(0.0);
                cands.extend_from_slice(&sampled);
                round += 1;
            }
            let w = run_step(query, &cands).expect("rows");
            let weights: Vec<f64> = w["counts"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
            progress(|| format!("kmeans_train: reducing {} candidates to {k} centers", weights.len()));
            xsell_kmeans::reduce_candidates(&cands, &weights, d, k, seed, &pool, &mut reporter("kmeans_train"))
                .unwrap_or_else(|e| km_error(e))
        }
    };

    let mut iterations = 0;
    let mut converged = false;
    while iterations < params.max_iter {
        let res = run_step(query, &centers).expect("rows");
        iterations += 1;
        let shift = res["center_shift"].as_f64().unwrap_or(f64::INFINITY);
        centers = flat(&res["centroids"]);
        progress(|| format!("kmeans_train: iteration {iterations} inertia {:.6} center shift {shift:.6e}", res["inertia"].as_f64().unwrap_or(0.0)));
        if shift <= tol_abs {
            converged = true;
            break;
        }
    }
    // Final E-step: sizes and inertia of the final centroids.
    let last = run_step(query, &centers).expect("rows");
    let mut sizes: Vec<u64> = last["counts"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    let mut model = xsell_kmeans::Model {
        k,
        dims: d,
        n_rows: n,
        centroids: std::mem::take(&mut centers),
        sizes: std::mem::take(&mut sizes),
        inertia: last["inertia"].as_f64().unwrap_or(0.0),
        iterations,
        converged,
        seed,
        algorithm: "lloyd (streaming)".into(),
        init: params.init.name().replace("k-means++", "k-means||"),
    };
    model.relabel_by_size();
    model.validate().unwrap_or_else(|e| km_error(e));
    model
}

/// `xsell.kmeans_train(query, k, options)`: K-means over a query's rows, streaming in passes.
#[pg_extern(volatile, parallel_unsafe, strict)]
fn kmeans_train(query: &str, k: i32, options: default!(JsonB, "'{}'")) -> KmeansModel {
    let map = match options.0 {
        Value::Object(m) => m,
        _ => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "kmeans options must be a JSON object"),
    };
    kmeans_model(train(query, k, Some(&map)))
}

/// `xsell.kmeans_sweep(query, k_values, options)`: one model per k with its inertia and
/// silhouette, to choose k (elbow and silhouette).
#[pg_extern(volatile, parallel_unsafe, strict)]
fn kmeans_sweep(
    query: &str,
    k_values: Vec<Option<i32>>,
    options: default!(JsonB, "'{}'"),
) -> TableIterator<'static, (name!(k, i32), name!(inertia, f64), name!(silhouette, Option<f64>), name!(model, KmeansModel))> {
    let map = match options.0 {
        Value::Object(m) => m,
        _ => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "kmeans options must be a JSON object"),
    };
    if k_values.is_empty() || k_values.len() > 100 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "k_values must hold between 1 and 100 values");
    }
    validate_query(query);
    let mut rows = Vec::new();
    for k in k_values {
        let k = k.unwrap_or_else(|| raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "k_values must not contain NULL"));
        let model = train(query, k, Some(&map));
        let sil = if model.k >= 2 {
            let sql = format!(
                "SELECT xsell.silhouette(xsell_q.f, xsell.kmeans_assign(xsell_q.f, $1::text::xsell.kmeans_model))
                 FROM (\n{query}\n) AS xsell_q(f)"
            );
            let text = model.to_json();
            let args = [DatumWithOid::from(text.as_str())];
            Spi::connect(|c| c.select(&sql, None, &args)?.first().get_one::<f64>())
                .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("kmeans_sweep: {e}")))
        } else {
            None
        };
        rows.push((k, model.inertia, sil, kmeans_model(model)));
    }
    TableIterator::new(rows)
}

extension_sql_file!(
    "../../sql/kmeans_train.sql",
    name = "kmeans_pass_aggregates",
    requires = [
        "kmeans_aggregates",
        "kmeans_step_aggregate",
        kmeans_pass_trans,
        kmeans_pass_final,
        kmeans_pass_combine,
        kmeans_pass_serial,
        kmeans_pass_deserial,
        kmeans_train,
        kmeans_sweep
    ]
);
