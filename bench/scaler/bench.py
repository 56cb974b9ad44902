#!/usr/bin/env python3
"""bench/scaler: xsell.scaler_fit over a 1,000,000 x 16 table versus scikit-learn
StandardScaler().fit on the same data in numpy, in one run.

Prints both times (best and median of --repeat), the ratio ours/peer (target <= 1.0; ours includes the
table scan, the peer starts from an in-memory array) and the max abs difference of mean and scale.

  python bench/scaler/bench.py --dsn "host=localhost port=5433 user=postgres dbname=xsell_bench"
"""
import argparse
import json
import os
import time

import numpy as np
import psycopg
from sklearn.preprocessing import StandardScaler

p = argparse.ArgumentParser()
p.add_argument("--dsn", default=os.environ.get("XSELL_BENCH_DSN", "host=localhost port=5433 user=postgres dbname=xsell_bench"))
p.add_argument("--rows", type=int, default=1_000_000)
p.add_argument("--repeat", type=int, default=9, help="timed runs per side (this 2-core VM is noisy: min and median are printed)")
a = p.parse_args()

D = 16
with psycopg.connect(a.dsn, autocommit=True) as con:
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_xsell")
    have = con.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'bench_scaler'").fetchone()[0]
    n = con.execute("SELECT count(*) FROM bench_scaler").fetchone()[0] if have else 0
    if n != a.rows:
        print(f"creating bench_scaler ({a.rows} x {D})", flush=True)
        con.execute("DROP TABLE IF EXISTS bench_scaler")
        cols = ", ".join(f"(random() * {j + 1} + {j * 10}) * CASE WHEN random() < 0.01 THEN 5 ELSE 1 END" for j in range(D))
        con.execute(f"CREATE TABLE bench_scaler AS SELECT g AS id, ARRAY[{cols}]::float8[] AS f FROM generate_series(1, {a.rows}) g")
        con.execute("VACUUM ANALYZE bench_scaler")
    # Warm the cache, then time the aggregate (parallel plan allowed, default settings).
    con.execute("SELECT count(*) FROM bench_scaler").fetchone()
    plan = "\n".join(r[0] for r in con.execute("EXPLAIN SELECT xsell.scaler_fit(f) FROM bench_scaler"))
    ours = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        model = con.execute("SELECT xsell.scaler_fit(f)::text FROM bench_scaler").fetchone()[0]
        ours.append(time.perf_counter() - t)
    model = json.loads(model)
    print("loading the same rows into numpy (untimed)", flush=True)
    with con.cursor() as cur:
        cur.execute("SELECT f FROM bench_scaler")
        X = np.array([r[0] for r in cur], dtype=np.float64)

peer = []
for _ in range(a.repeat):
    t = time.perf_counter()
    sc = StandardScaler().fit(X)
    peer.append(time.perf_counter() - t)

t_ours, t_peer = min(ours), min(peer)
med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
print(f"plan: {'parallel' if 'Gather' in plan else 'serial'} ({plan.count('Workers Planned') and plan.split('Workers Planned: ')[1].split()[0]} workers planned)")
print(f"rows x features      : {X.shape[0]} x {X.shape[1]}")
print(f"xsell.scaler_fit     : {t_ours:.3f} s best, {med(ours):.3f} s median of {a.repeat} (includes the table scan)")
print(f"sklearn .fit (numpy) : {t_peer:.3f} s best, {med(peer):.3f} s median of {a.repeat} (data already in memory)")
print(f"ratio ours/peer      : {t_ours / t_peer:.2f} best, {med(ours) / med(peer):.2f} median  (target <= 1.0)")
print(f"max |mean diff|      : {np.max(np.abs(np.array(model['mean']) - sc.mean_)):.3e}")
print(f"max |scale diff|     : {np.max(np.abs(np.array(model['scale']) - sc.scale_)):.3e}")
