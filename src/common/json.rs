//! `jsonb` option arguments, parsed once per call site rather than once per row.

use super::{Code, raise};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, JsonB};
use serde_json::{Map, Value};
use std::ffi::CStr;

/// A `jsonb` argument that is only decoded when [`LazyJsonb::parse`] is called. Aggregates
/// receive their options on every row but read them once.
pub struct LazyJsonb(pg_sys::Datum);

impl LazyJsonb {
    /// The argument as a JSON object (an error for any other JSON value).
    pub fn parse(&self, what: &str) -> Map<String, Value> {
        // SAFETY: the datum is a non-null jsonb of this call; jsonb_out returns a palloc'd cstring.
        let text = unsafe {
            let out = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(self.0)])
                .unwrap_or_else(|| raise(Code::ERRCODE_INTERNAL_ERROR, "jsonb_out returned NULL"));
            CStr::from_ptr(out.cast_mut_ptr::<std::ffi::c_char>()).to_string_lossy().into_owned()
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("{what} must be a JSON object")),
            Err(e) => raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("{what}: {e}")),
        }
    }
}

impl FromDatum for LazyJsonb {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null { None } else { Some(LazyJsonb(datum)) }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for LazyJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the SQL signature declares jsonb.
        unsafe { arg.unbox_arg_using_from_datum::<Self>() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl SqlTranslatable for LazyJsonb {
    const TYPE_IDENT: &'static str = <JsonB as SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: TypeOrigin = <JsonB as SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = <JsonB as SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = <JsonB as SqlTranslatable>::RETURN_SQL;
}

/// Reads typed options out of a JSON object, refusing unknown keys (a typo is an error, not a
/// silently ignored option).
pub struct Options<'a> {
    map: &'a Map<String, Value>,
    what: &'a str,
    known: Vec<&'static str>,
}

impl<'a> Options<'a> {
    pub fn new(map: &'a Map<String, Value>, what: &'a str) -> Self {
        Options { map, what, known: Vec::new() }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, want: &str, got: &Value) -> ! {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{} option \"{key}\" must be {want}, got {got}", self.what),
        )
    }

    /// An integer option within `[min, max]`.
    pub fn int(&mut self, key: &'static str, default: i64, min: i64, max: i64) -> i64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.as_i64() {
                Some(i) if (min..=max).contains(&i) => i,
                _ => self.bad(key, &format!("an integer between {min} and {max}"), v),
            },
        }
    }

    /// A finite number option within `[min, max]`.
    pub fn float(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= min && x <= max => x,
                _ => self.bad(key, &format!("a number between {min} and {max}"), v),
            },
        }
    }

    /// A string option.
    pub fn string(&mut self, key: &'static str) -> Option<&'a str> {
        self.get(key).map(|v| v.as_str().unwrap_or_else(|| self.bad(key, "a string", v)))
    }

    /// A boolean option.
    pub fn boolean(&mut self, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) => v.as_bool().unwrap_or_else(|| self.bad(key, "true or false", v)),
        }
    }

    /// A raw option value.
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.get(key)
    }

    /// Errors on keys that were never asked for.
    pub fn finish(self) {
        if let Some(k) = self.map.keys().find(|k| !self.known.contains(&k.as_str())) {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown {} option \"{k}\" (known: {})", self.what, self.known.join(", ")),
            );
        }
    }
}
