//! SQL layer of feature standardization: `xsell.scaler_fit`, `xsell.scale`, `xsell.unscale`
//! and the type `xsell.scaler`. The statistics live in the pure crate `xsell-scaler`.

use crate::common::partial::{self, Partial};
use crate::common::{Code, F64Array, Row, arg_f64array, raise, trans_internal};
use pgrx::prelude::*;
use pgrx::{Internal, InOutFuncs, StringInfo};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use xsell_scaler::{ScalerError, ScalerState};

/// A fitted standard scaler (`xsell.scaler`). Its text form is JSON:
/// `{"n":..,"mean":[..],"scale":[..],"var":[..],"count":[..]}`.
#[derive(PostgresType, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[inoutfuncs]
pub struct Scaler(pub xsell_scaler::Scaler);

impl InOutFuncs for Scaler {
    fn input(input: &CStr) -> Self {
        let text = input.to_str().unwrap_or_else(|_| {
            raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, "xsell.scaler input is not valid UTF-8")
        });
        match xsell_scaler::Scaler::from_json(text) {
            Ok(s) => Scaler(s),
            Err(e) => raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, format!("invalid xsell.scaler: {e}")),
        }
    }

    fn output(&self, buffer: &mut StringInfo) {
        buffer.push_str(&self.0.to_json());
    }
}

fn scaler_error(e: ScalerError) -> ! {
    let code = match e {
        ScalerError::DimensionMismatch { .. } | ScalerError::EmptyRow => Code::ERRCODE_ARRAY_ELEMENT_ERROR,
        ScalerError::NonFinite { .. } => Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        ScalerError::Invalid(_) => Code::ERRCODE_INVALID_BINARY_REPRESENTATION,
    };
    raise(code, e.to_string())
}

/// Transition function of `xsell.scaler_fit`: one row into the running moments. Called
/// once per row through the C ABI (see [`trans_internal`]).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn xsell_scaler_fit_trans(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: declared in sql/scaler.sql as (internal, float8[]) -> internal.
    unsafe {
        trans_internal(fcinfo, ScalerState::new, |st| {
            if let Some(features) = arg_f64array(fcinfo, 1) {
                let result = match features.row("features") {
                    Row::Dense(values) => st.add_dense(values),
                    Row::Sparse(values) => st.add(&values),
                };
                result.unwrap_or_else(|e| scaler_error(e));
            }
        })
    }
}
crate::finfo_v1!(pg_finfo_xsell_scaler_fit_trans);

impl Partial for ScalerState {
    fn merge_from(&mut self, other: Self) {
        self.merge(&other).unwrap_or_else(|e| scaler_error(e));
    }

    fn to_bytes(&mut self) -> Vec<u8> {
        ScalerState::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        ScalerState::from_bytes(bytes).unwrap_or_else(|e| scaler_error(e))
    }
}

/// Combine function of `xsell.scaler_fit` (parallel aggregation): Chan's pairwise merge.
#[pg_extern(immutable, parallel_safe)]
fn scaler_fit_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    partial::combine::<ScalerState>(a, b, fcinfo)
}

/// Serialization function of `xsell.scaler_fit` (partial states sent between processes).
#[pg_extern(immutable, parallel_safe, strict)]
fn scaler_fit_serial(state: Internal) -> Vec<u8> {
    partial::serial::<ScalerState>(state)
}

/// Deserialization function of `xsell.scaler_fit`.
#[pg_extern(immutable, parallel_safe, strict)]
fn scaler_fit_deserial(bytes: &[u8], _unused: Internal) -> Internal {
    partial::deserial::<ScalerState>(bytes)
}

/// Final function of `xsell.scaler_fit`: the fitted scaler, NULL when no row was seen.
#[pg_extern(immutable, parallel_safe)]
fn scaler_fit_final(state: Internal) -> Option<Scaler> {
    let mut state = state;
    // SAFETY: the state is a ScalerState.
    let st = unsafe { state.get_mut::<ScalerState>() }?;
    st.finish().map(Scaler)
}

/// `xsell.scale(features, scaler)`: `(x - mean) / scale` per feature.
#[pg_extern(immutable, parallel_safe, strict)]
fn scale(features: F64Array<'_>, scaler: Scaler) -> Vec<Option<f64>> {
    let x = features.row("features").to_options();
    scaler.0.scale(&x).unwrap_or_else(|e| scaler_error(e))
}

/// `xsell.unscale(z, scaler)`: `z * scale + mean` per feature.
#[pg_extern(immutable, parallel_safe, strict)]
fn unscale(z: F64Array<'_>, scaler: Scaler) -> Vec<Option<f64>> {
    let z = z.row("z").to_options();
    scaler.0.unscale(&z).unwrap_or_else(|e| scaler_error(e))
}

/// `xsell.scaler_features(scaler)`: one row per feature, for reports and BI tools.
#[pg_extern(immutable, parallel_safe, strict)]
fn scaler_features(
    scaler: Scaler,
) -> TableIterator<
    'static,
    (
        name!(feature, i32),
        name!(count, i64),
        name!(mean, Option<f64>),
        name!(scale, Option<f64>),
        name!(var, Option<f64>),
    ),
> {
    let s = scaler.0;
    let rows: Vec<_> = (0..s.dims())
        .map(|j| ((j + 1) as i32, s.count[j] as i64, s.mean[j], s.scale[j], s.var[j]))
        .collect();
    TableIterator::new(rows)
}

extension_sql_file!(
    "../../sql/scaler.sql",
    name = "scaler_fit_aggregate",
    requires = [
        Scaler,
        scaler_fit_combine,
        scaler_fit_serial,
        scaler_fit_deserial,
        scaler_fit_final,
        scale,
        unscale,
        scaler_features
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn fit_scale_unscale_round_trip() {
        let z = Spi::get_one::<Vec<Option<f64>>>(
            "SELECT xsell.scale(ARRAY[3.0, 10.0], s) FROM
               (SELECT xsell.scaler_fit(f) s FROM (VALUES (ARRAY[1.0, 10.0]), (ARRAY[3.0, 10.0]), (NULL::float8[])) v(f)) q",
        )
        .unwrap()
        .unwrap();
        assert_eq!(z, vec![Some(1.0), Some(0.0)]);
        let x = Spi::get_one::<Vec<Option<f64>>>(
            "SELECT xsell.unscale(ARRAY[1.0, NULL], '{\"n\":2,\"mean\":[2.0,10.0],\"scale\":[1.0,1.0],\"var\":[1.0,0.0],\"count\":[2,2]}'::xsell.scaler)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(x, vec![Some(3.0), None]);
    }

    #[pg_test]
    fn empty_input_gives_null() {
        let s = Spi::get_one::<String>("SELECT xsell.scaler_fit(f)::text FROM (SELECT NULL::float8[] f WHERE false) v")
            .unwrap();
        assert_eq!(s, None);
    }

    #[pg_test(error = "expected 2 features, got 3")]
    fn ragged_rows_are_an_error() {
        Spi::run("SELECT xsell.scaler_fit(f) FROM (VALUES (ARRAY[1.0, 2.0]), (ARRAY[1.0, 2.0, 3.0])) v(f)").unwrap();
    }

    #[pg_test(error = "invalid xsell.scaler: scale of feature 1 must be positive, got -1")]
    fn input_is_validated() {
        Spi::run(
            "SELECT '{\"n\":2,\"mean\":[2.0],\"scale\":[-1.0],\"var\":[1.0],\"count\":[2]}'::xsell.scaler",
        )
        .unwrap();
    }
}
