//! pg_xsell: customer analytics for e-commerce inside PostgreSQL.
//!
//! This crate is the thin SQL-facing layer. Every algorithm lives in a pure crate under
//! `crates/` that never imports pgrx; the modules here only check arguments, convert types,
//! raise errors with proper SQLSTATEs, and register GUCs. One module per capability:
//!
//! - [`scaler`]: feature standardization (`xsell.scaler_fit`, `xsell.scale`, `xsell.unscale`).
//! - [`kmeans`]: K-means segmentation (`xsell.kmeans_fit`, `xsell.kmeans_train`, `xsell.kmeans_assign`, ...).
//! - [`fpgrowth`]: cross-sell rules (`xsell.frequent_itemsets`, `xsell.rules`, `xsell.recommend`).
//! - [`models`]: the model registry (`xsell.models()`, `xsell.model_dir`, per-backend caches).
//! - [`embed`]: sentence embeddings and intent scoring (`xsell.embed`, `xsell.intent_scores`, ...).
//! - [`lm`]: causal-LM scoring and generation (`xsell.lm_loglik`, `xsell.lm_rank`, `xsell.lm_generate`, ...).
//!
//! Every SQL object lives in the schema `xsell` (fixed by `pg_xsell.control`).

use pgrx::prelude::*;

pub mod common;

/// Large blocks of the extension's Rust heap get transparent huge pages (see `common::alloc`).
#[global_allocator]
static ALLOC: common::alloc::HugePageAlloc = common::alloc::HugePageAlloc;

pub mod embed;
pub mod fpgrowth;
pub mod guc;
pub mod kmeans;
pub mod lm;
pub mod models;
pub mod scaler;

pgrx::pg_module_magic!();

/// Registers the GUCs. Nothing else happens at load time: models load lazily, on first use.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
}

/// `xsell.version()`: the extension and build it runs.
#[pg_extern(immutable, parallel_safe)]
fn version() -> String {
    format!(
        "pg_xsell {} (pgrx {}, PostgreSQL {})",
        env!("CARGO_PKG_VERSION"),
        common::PGRX_VERSION,
        pg_sys::PG_MAJORVERSION_NUM
    )
}

extension_sql_file!(
    "../sql/version.sql",
    name = "comment_version",
    requires = [version]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_names_the_extension() {
        let v = Spi::get_one::<String>("SELECT xsell.version()").unwrap().unwrap();
        assert!(v.starts_with("pg_xsell "), "{v}");
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
