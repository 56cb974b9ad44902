//! `float8[]` arguments read in place: no copy, no per-element boxing.
//!
//! Feature rows arrive once per table row in aggregates, so reading them is on the hot path.
//! [`F64Array`] detoasts the argument (a no-op for the usual short, uncompressed rows) and
//! borrows its data directly.

use super::{Code, raise};
use pgrx::array::RawArray;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{Array, FromDatum};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// A borrowed `float8[]` argument.
pub struct F64Array<'a> {
    ndim: usize,
    len: usize,
    raw: NonNull<pg_sys::ArrayType>,
    _lifetime: PhantomData<&'a [f64]>,
}

/// A feature row: borrowed when complete, materialized when it has NULL elements.
pub enum Row<'a> {
    Dense(&'a [f64]),
    Sparse(Vec<Option<f64>>),
}

impl<'a> Row<'a> {
    pub fn len(&self) -> usize {
        match self {
            Row::Dense(s) => s.len(),
            Row::Sparse(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values with NULL (and only NULL) as `None`.
    pub fn to_options(&self) -> Vec<Option<f64>> {
        match self {
            Row::Dense(s) => s.iter().map(|&v| Some(v)).collect(),
            Row::Sparse(v) => v.clone(),
        }
    }
}

impl<'a> F64Array<'a> {
    /// Number of elements (all dimensions together).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of dimensions (0 for an empty array).
    pub fn ndim(&self) -> usize {
        self.ndim
    }

    /// Lengths of the dimensions.
    pub fn dims(&self) -> Vec<usize> {
        // SAFETY: `raw` points at a detoasted array that outlives `self`.
        let raw = unsafe { RawArray::from_ptr(self.raw) };
        raw.dims().iter().map(|&d| d as usize).collect()
    }

    /// The elements in storage order, `None` for NULL.
    pub fn values(&self) -> Row<'a> {
        // SAFETY: `raw` points at a detoasted float8 array that outlives `'a`.
        let mut raw = unsafe { RawArray::from_ptr(self.raw) };
        let data: NonNull<[f64]> = raw.data::<f64>();
        match raw.nulls_bitslice() {
            None => Row::Dense(unsafe { &*data.as_ptr() }),
            Some(bits) => {
                let bits = unsafe { bits.as_ref() };
                let data = unsafe { &*data.as_ptr() };
                let mut next = 0;
                let v = (0..self.len)
                    .map(|i| {
                        // A set bit means "not null"; non-null values are stored packed.
                        if bits[i] {
                            next += 1;
                            Some(data[next - 1])
                        } else {
                            None
                        }
                    })
                    .collect();
                Row::Sparse(v)
            }
        }
    }

    /// A one-dimensional feature row (an empty or multi-dimensional array is an error).
    pub fn row(&self, what: &str) -> Row<'a> {
        if self.ndim > 1 {
            raise(
                Code::ERRCODE_ARRAY_ELEMENT_ERROR,
                format!("{what} must be a one-dimensional array, got {} dimensions", self.ndim),
            );
        }
        if self.len == 0 {
            raise(Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("{what} must not be an empty array"));
        }
        self.values()
    }

    /// A one-dimensional row that must be complete: NULL elements, NaN and ±Infinity are errors.
    pub fn finite_row(&self, what: &str) -> Row<'a> {
        let row = self.row(what);
        let check = |i: usize, v: Option<f64>| match v {
            None => raise(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("{what} element {} is NULL: only complete rows are allowed", i + 1),
            ),
            Some(x) if !x.is_finite() => raise(
                Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                format!("{what} element {} is {x}: only finite values are allowed", i + 1),
            ),
            _ => {}
        };
        match &row {
            Row::Dense(s) => s.iter().enumerate().for_each(|(i, &x)| check(i, Some(x))),
            Row::Sparse(v) => v.iter().enumerate().for_each(|(i, &x)| check(i, x)),
        }
        row
    }
}

impl FromDatum for F64Array<'_> {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null float8[] datum; detoasting returns a pointer valid for the call.
        unsafe {
            let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
            // A plain, uncompressed, in-line value with a 4-byte header (the usual feature
            // row) is used as it is: this skips a guarded call into PostgreSQL per row.
            // Anything else (short header, compressed, toasted) goes through pg_detoast_datum.
            // (VARATT_IS_4B_U: the low two bits of the first byte are 0 on little-endian.)
            let plain = cfg!(target_endian = "little") && !raw.is_null() && (*(raw as *const u8) & 0x03) == 0;
            let ptr = if plain { raw } else { pg_sys::pg_detoast_datum(raw) } as *mut pg_sys::ArrayType;
            let raw = NonNull::new(ptr)?;
            let arr = RawArray::from_ptr(raw);
            if arr.oid() != pg_sys::FLOAT8OID {
                raise(Code::ERRCODE_DATATYPE_MISMATCH, "expected a float8[] array");
            }
            Some(F64Array { ndim: arr.dims().len(), len: arr.len(), raw, _lifetime: PhantomData })
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for F64Array<'fcx> {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the SQL signature declares float8[].
        unsafe { arg.unbox_arg_using_from_datum::<Self>() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl SqlTranslatable for F64Array<'_> {
    const TYPE_IDENT: &'static str = <Array<'static, f64> as SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: TypeOrigin = <Array<'static, f64> as SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        <Array<'static, f64> as SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        <Array<'static, f64> as SqlTranslatable>::RETURN_SQL;
}
