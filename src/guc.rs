//! Configuration parameters (`SET xsell.<name> = ...`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `xsell.verbose`: NOTICE-level progress messages from long-running work (training passes,
/// mining, batched model inference).
pub static VERBOSE: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `xsell.threads`: compute threads a backend may use for one call (0 = one per CPU core).
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `xsell.max_fit_memory_mb`: the most memory an in-memory fit (`xsell.kmeans_fit`) may use
/// to hold its rows; beyond it the aggregate stops with a 54000 error pointing to
/// `xsell.kmeans_train`.
pub static MAX_FIT_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(2048);

pub fn init() {
    GucRegistry::define_int_guc(
        c"xsell.max_fit_memory_mb",
        c"Memory (MB) an in-memory fit such as xsell.kmeans_fit may use for its rows.",
        c"Beyond it the aggregate stops with an error that points to xsell.kmeans_train, which streams.",
        &MAX_FIT_MEMORY_MB,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"xsell.verbose",
        c"Report progress of long-running pg_xsell work as NOTICE messages.",
        c"When on, training passes, mining and batched inference emit NOTICE lines with their progress.",
        &VERBOSE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"xsell.threads",
        c"Compute threads one pg_xsell call may use (0 = one per CPU core).",
        c"Threads never call into PostgreSQL; the backend's own thread collects the results.",
        &THREADS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: a static C string; called once from _PG_init.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"xsell".as_ptr()) };
}

/// Whether NOTICE progress is on.
pub fn verbose() -> bool {
    VERBOSE.get()
}
