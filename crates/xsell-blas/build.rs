//! Links the system OpenBLAS (Debian: libopenblas-dev).
//!
//! The library directory can be overridden with `XSELL_OPENBLAS_LIB_DIR`
//! (a folder holding `libopenblas.so`).
fn main() {
    println!("cargo:rerun-if-env-changed=XSELL_OPENBLAS_LIB_DIR");
    if let Ok(dir) = std::env::var("XSELL_OPENBLAS_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=dylib=openblas");
}
