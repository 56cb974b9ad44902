#!/usr/bin/env python3
"""Time scikit-learn's KMeans on the benchmark configuration and save the
rows so the Rust benchmark can run on exactly the same data.

    /root/.cache/pg_xsell/venv/bin/python crates/xsell-kmeans/bench/sklearn_bench.py /tmp/kmeans_bench.f64
    XSELL_KMEANS_BENCH_DATA=/tmp/kmeans_bench.f64 \
        cargo test -p xsell-kmeans --release --test bench -- --ignored --nocapture

Data: make_blobs(1_000_000, 16, centers=8, cluster_std=8, random_state=0)
(overlapping clusters, ~15-30 Lloyd iterations); KMeans(8, n_init=1,
random_state=0), i.e. k-means++ and algorithm="lloyd".
"""

import sys
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    X = make_blobs(1_000_000, 16, centers=8, cluster_std=8.0, random_state=0)[0]
    if out:
        X.astype("<f8").tofile(out)
    for rep in range(3):
        t = time.perf_counter()
        km = KMeans(8, n_init=1, random_state=rep).fit(X)
        el = time.perf_counter() - t
        print(f"sklearn seed {rep}: {el:.3f} s, {km.n_iter_} iterations, inertia {km.inertia_:.6e}", flush=True)


if __name__ == "__main__":
    main()
