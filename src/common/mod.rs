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
