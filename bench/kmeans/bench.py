#!/usr/bin/env python3
"""bench/kmeans: xsell.kmeans_fit over a 1,000,000 x 16 table of standardized, overlapping
Gaussian blobs (k = 8, n_init = 1, k-means++) versus scikit-learn
KMeans(n_clusters=8, n_init=1, init='k-means++', algorithm='lloyd') on the same rows in numpy,
in one run. Prints both times, the ratio ours/peer (target <= 1.0; ours includes the table
scan) and the inertia ratio (target <= 1.001). Then xsell.kmeans_train (streaming passes) at
several table sizes and parallel-worker settings: time, peak backend RSS, and inertia versus
kmeans_fit on a 1M sample.

  python bench/kmeans/bench.py [--dsn ...] [--train-sizes 100000,1000000,10000000]
"""
import argparse
import json
import os
import re
import time

import numpy as np
import psycopg
from sklearn.cluster import KMeans

p = argparse.ArgumentParser()
p.add_argument("--dsn", default=os.environ.get("XSELL_BENCH_DSN", "host=localhost port=5433 user=postgres dbname=xsell_bench"))
p.add_argument("--rows", type=int, default=1_000_000)
p.add_argument("--train-sizes", default="100000,1000000,10000000")
p.add_argument("--workers", default="0,1,2")
p.add_argument("--repeat", type=int, default=3, help="timed kmeans_fit runs per side (best and median printed)")
a = p.parse_args()
D, K = 16, 8


def blobs_sql(table, n):
    # 8 overlapping Gaussian blobs in 16 dimensions (Box-Muller), centers fixed by setseed.
    centers = np.random.default_rng(3).normal(0, 0.45, (K, D))  # close enough to overlap
    cvals = ",".join("ARRAY[" + ",".join(f"{v:.6f}" for v in c) + "]" for c in centers)
    return f"""
      DROP TABLE IF EXISTS {table};
      SELECT setseed(0.5);
      CREATE TABLE {table} AS
      SELECT g AS id, ARRAY(SELECT (ARRAY[{cvals}])[1 + g % {K}][j] + sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())
                             FROM generate_series(1, {D}) j) AS f
      FROM generate_series(1, {n}) g;
      VACUUM ANALYZE {table};"""


def rss_peak(con, pid):
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]) // 1024


with psycopg.connect(a.dsn, autocommit=True) as con:
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_xsell")
    have = con.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'bench_kmeans'").fetchone()[0]
    if not have or con.execute("SELECT count(*) FROM bench_kmeans").fetchone()[0] != a.rows:
        print(f"creating bench_kmeans ({a.rows} x {D})", flush=True)
        for stmt in blobs_sql("bench_kmeans", a.rows).split(";"):
            if stmt.strip():
                con.execute(stmt)
    con.execute("SELECT count(*) FROM bench_kmeans").fetchone()
    FIT = "SELECT xsell.kmeans_fit(f, 8)::text FROM bench_kmeans"

    def plan_of(sql):
        txt = "\n".join(r[0] for r in con.execute("EXPLAIN " + sql))
        m = re.search(r"Workers Planned: (\d+)", txt)
        return f"parallel, {m.group(1)} workers" if m and "Partial Aggregate" in txt else "serial"

    def time_fit(repeat):
        times, model = [], None
        for _ in range(repeat):
            t = time.perf_counter()
            model = json.loads(con.execute(FIT).fetchone()[0])
            times.append(time.perf_counter() - t)
        return times, model

    plan = plan_of(FIT)
    ours, model = time_fit(a.repeat)
    # The parallel plan, for comparison (function costs ignored, so the planner takes workers).
    con.execute("SET cpu_operator_cost = 0")
    par_plan = plan_of(FIT)
    par, par_model = time_fit(a.repeat)
    con.execute("RESET cpu_operator_cost")
    with con.cursor() as cur:
        cur.execute("SELECT f FROM bench_kmeans")
        X = np.array([r[0] for r in cur], dtype=np.float64)
    peer = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        km = KMeans(n_clusters=K, n_init=1, init="k-means++", algorithm="lloyd", random_state=0).fit(X)
        peer.append(time.perf_counter() - t)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    print(f"kmeans_fit 1M x 16, k=8 (default plan: {plan}; best / median of {a.repeat}): ours {min(ours):.2f} / {med(ours):.2f} s "
          f"({model['iterations']} iterations, {model['algorithm']}), sklearn {min(peer):.2f} / {med(peer):.2f} s ({km.n_iter_} iterations)")
    print(f"   ratio ours/peer {min(ours) / min(peer):.2f} best, {med(ours) / med(peer):.2f} median (target <= 1.0); "
          f"inertia ours/sklearn {model['inertia'] / km.inertia_:.5f} (target <= 1.001)")
    print(f"   the {par_plan} plan: {min(par):.2f} / {med(par):.2f} s, ratio {min(par) / min(peer):.2f} best; "
          f"same model as the default plan: {par_model == model}")
    ref_inertia = model["inertia"]

    for n in [int(x) for x in a.train_sizes.split(",") if x]:
        table = f"bench_kmeans_{n}"
        if not con.execute("SELECT count(*) FROM pg_tables WHERE tablename = %s", (table,)).fetchone()[0]:
            print(f"creating {table}", flush=True)
            for stmt in blobs_sql(table, n).split(";"):
                if stmt.strip():
                    con.execute(stmt)
        for w in [int(x) for x in a.workers.split(",")]:
            with psycopg.connect(a.dsn, autocommit=True) as c2:
                pid = c2.execute("SELECT pg_backend_pid()").fetchone()[0]
                c2.execute(f"SET max_parallel_workers_per_gather = {w}")
                if w:
                    c2.execute("SET parallel_setup_cost = 0; SET min_parallel_table_scan_size = 0")
                t = time.perf_counter()
                m = json.loads(c2.execute(f"SELECT xsell.kmeans_train('SELECT f FROM {table}', 8)::text").fetchone()[0])
                dt = time.perf_counter() - t
                extra = f", inertia per row vs kmeans_fit on 1M: {(m['inertia'] / n) / (ref_inertia / a.rows):.4f}"
                print(f"kmeans_train {n} rows, {w} parallel workers: {dt:.2f} s, {m['iterations']} Lloyd passes, "
                      f"peak backend RSS {rss_peak(c2, pid)} MiB{extra}", flush=True)
