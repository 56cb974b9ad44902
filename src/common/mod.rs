//! Shared plumbing of the SQL layer: errors, internal aggregate states, array conversion,
//! the per-backend compute thread pool, and progress notices.

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};
use std::cell::RefCell;
use std::sync::Arc;

pub use pgrx::PgSqlErrorCode as Code;

/// The pgrx version this build uses (pinned in pgrx.toml; checked against Cargo.lock by
/// `scripts/pins check`).
pub const PGRX_VERSION: &str = "0.18";

/// Raises an ERROR with the given SQLSTATE. Never returns.
pub fn raise(code: Code, message: impl Into<String>) -> ! {
    let message: String = message.into();
    pgrx::ereport!(ERROR, code, message);
}

/// Raises an ERROR with a detail line.
pub fn raise_detail(code: Code, message: impl Into<String>, detail: impl Into<String>) -> ! {
    let message: String = message.into();
    let detail: String = detail.into();
    pgrx::ereport!(ERROR, code, message, detail);
}

/// Emits a NOTICE when `xsell.verbose` is on.
pub fn progress(message: impl FnOnce() -> String) {
    if crate::guc::verbose() {
        pgrx::notice!("{}", message());
    }
}

/// Services a pending cancel or statement_timeout (raises an ERROR if there is one).
#[inline]
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// The aggregate memory context of the current call, or an ERROR when the function was not
/// called as part of an aggregate.
pub fn agg_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut cx: pg_sys::MemoryContext = std::ptr::null_mut();
    // SAFETY: fcinfo is the live call info of this function call.
    let is_agg = unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut cx) };
    if is_agg == 0 || cx.is_null() {
        raise(Code::ERRCODE_FEATURE_NOT_SUPPORTED, "this function can only be called as part of an aggregate");
    }
    cx
}

/// The Rust value behind an `internal` aggregate state, created with `init` in the aggregate
/// memory context on first use. The value is dropped when that context is reset or deleted,
/// so nothing leaks when the query fails or is cancelled.
///
/// # Safety
/// `state` must be NULL or have been produced by this function (or [`new_internal`]) with
/// the same `T`.
pub unsafe fn agg_state<'a, T>(
    state: &'a mut Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    init: impl FnOnce() -> T,
) -> &'a mut T {
    if !state.initialized() {
        let cx = agg_context(fcinfo);
        let ptr = PgMemoryContexts::For(cx).leak_and_drop_on_delete(init());
        *state = Internal::from(Some(pg_sys::Datum::from(ptr)));
    }
    // SAFETY: initialized above or by the caller's contract.
    unsafe { state.get_mut::<T>().expect("initialized internal state") }
}

/// The body of a transition function with an `internal` state that PostgreSQL calls
/// directly through the C ABI (declared `LANGUAGE c` in `sql/`): it runs once per row, so it
/// skips pgrx's per-call wrapper (argument iteration, a memory-context switch per call).
/// Argument 0 is the state (NULL on the first row); `step` gets the state and the call info.
///
/// # Safety
/// `fcinfo` is the live call info of a transition function whose state was always created
/// by this function (or [`agg_state`]) with the same `T`.
pub unsafe fn trans_internal<T>(
    fcinfo: pg_sys::FunctionCallInfo,
    init: impl FnOnce() -> T,
    step: impl FnOnce(&mut T),
) -> pg_sys::Datum {
    // SAFETY: forwarded from the caller.
    unsafe {
        let prev = (!pgrx::fcinfo::pg_arg_is_null(fcinfo, 0)).then(|| pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0));
        let mut state = Internal::from(prev);
        step(agg_state(&mut state, fcinfo, init));
        state.unwrap().expect("agg_state initializes the state")
    }
}

/// Argument `i` of a C-ABI function as a `float8[]`, `None` when it is NULL.
///
/// # Safety
/// Argument `i` of the live call `fcinfo` is declared `float8[]`.
pub unsafe fn arg_f64array<'a>(fcinfo: pg_sys::FunctionCallInfo, i: usize) -> Option<F64Array<'a>> {
    // SAFETY: forwarded from the caller.
    unsafe {
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, i) {
            return None;
        }
        F64Array::from_polymorphic_datum(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i), false, pg_sys::FLOAT8ARRAYOID)
    }
}

/// Declares the version-1 calling convention of a C-ABI function (what `PG_FUNCTION_INFO_V1`
/// does in C): `finfo_v1!(pg_finfo_<symbol>);`.
#[macro_export]
macro_rules! finfo_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

/// Wraps a value as an `internal` datum in the aggregate memory context.
pub fn new_internal<T>(value: T, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let cx = agg_context(fcinfo);
    let ptr = PgMemoryContexts::For(cx).leak_and_drop_on_delete(value);
    Internal::from(Some(pg_sys::Datum::from(ptr)))
}

/// Takes the Rust value out of an `internal` state, leaving a default in its place.
///
/// # Safety
/// As for [`agg_state`].
pub unsafe fn take_state<T: Default>(state: &mut Internal) -> Option<T> {
    // SAFETY: caller's contract.
    unsafe { state.get_mut::<T>().map(std::mem::take) }
}

pub mod alloc;
mod array;
mod json;
pub mod partial;
pub use array::{F64Array, Row};
pub use json::{LazyJsonb, Options};

thread_local! {
    static POOL: RefCell<Option<(usize, Arc<rayon::ThreadPool>)>> = const { RefCell::new(None) };
}

/// The backend's compute pool, sized by `xsell.threads` (0 = one thread per CPU core).
/// Its threads only compute on Rust-owned data; they never call into PostgreSQL.
pub fn pool() -> Arc<rayon::ThreadPool> {
    let want = match crate::guc::THREADS.get() {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if let Some((n, pool)) = p.as_ref() {
            if *n == want {
                return pool.clone();
            }
        }
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(want)
            .thread_name(|i| format!("pg_xsell-{i}"))
            .build()
        {
            Ok(pool) => Arc::new(pool),
            Err(e) => raise(Code::ERRCODE_INSUFFICIENT_RESOURCES, format!("cannot start compute threads: {e}")),
        };
        *p = Some((want, pool.clone()));
        pool
    })
}
