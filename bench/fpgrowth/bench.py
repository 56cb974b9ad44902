#!/usr/bin/env python3
"""bench/fpgrowth: xsell.frequent_itemsets + xsell.rules over a table of baskets versus mlxtend
fpgrowth + association_rules (including its one-hot encoding), in one run.

Data: baskets over 500 items with Zipf-like popularity (avg ~5 items) and planted correlations,
generated with a fixed seed. Prints times, ratio ours/peer (target <= 0.2 at min_support 0.005),
itemset/rule counts on both sides and the max abs difference of supports and confidences;
then cart-recommendation latency on the 100k model and time + peak backend memory for
1,000,000 baskets.

  python bench/fpgrowth/bench.py [--dsn ...] [--big 1000000]
"""
import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd
import psycopg
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder

p = argparse.ArgumentParser()
p.add_argument("--dsn", default=os.environ.get("XSELL_BENCH_DSN", "host=localhost port=5433 user=postgres dbname=xsell_bench"))
p.add_argument("--baskets", type=int, default=100_000)
p.add_argument("--big", type=int, default=1_000_000)
p.add_argument("--min-confidence", type=float, default=0.3)
a = p.parse_args()

N_ITEMS = 500


def make_baskets(n, seed):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_ITEMS + 1) ** 1.1
    weights /= weights.sum()
    sizes = rng.poisson(4.2, n) + 1
    flat = rng.choice(N_ITEMS, size=sizes.sum(), p=weights)
    planted = [(3, 77), (10, 150), (25, 26), (40, 300), (120, 121)]
    out, pos = [], 0
    for s in sizes:
        b = set(flat[pos:pos + s].tolist())
        pos += s
        for x, y in planted:
            if x in b and rng.random() < 0.6:
                b.add(y)
        out.append(sorted(f"item{i:03d}" for i in b))
    return out


def load(con, table, baskets):
    con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(f"CREATE TABLE {table} (basket_id int, items text[])")
    with con.cursor().copy(f"COPY {table} FROM STDIN") as cp:
        for i, b in enumerate(baskets):
            cp.write_row((i, "{" + ",".join(b) + "}"))
    con.execute(f"VACUUM ANALYZE {table}")


def ours(con, table, ms):
    t = time.perf_counter()
    con.execute(f"CREATE TEMP TABLE m AS SELECT xsell.frequent_itemsets(items, {ms}) AS m FROM {table}")
    rules = con.execute(
        f"SELECT antecedent, consequent, support, confidence FROM xsell.rules((SELECT m FROM m), {a.min_confidence})").fetchall()
    dt = time.perf_counter() - t
    itemsets = con.execute("SELECT items, support FROM xsell.itemset_table((SELECT m FROM m))").fetchall()
    con.execute("DROP TABLE m")
    return dt, itemsets, rules


def peer(baskets, ms):
    t = time.perf_counter()
    te = TransactionEncoder()
    df = pd.DataFrame(te.fit(baskets).transform(baskets, sparse=False), columns=te.columns_)
    fi = fpgrowth(df, min_support=ms, use_colnames=True, max_len=4)
    rules = association_rules(fi, len(baskets), metric="confidence", min_threshold=a.min_confidence)
    return time.perf_counter() - t, fi, rules


with psycopg.connect(a.dsn, autocommit=True) as con:
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_xsell")
    baskets = make_baskets(a.baskets, 42)
    print(f"{len(baskets)} baskets, {N_ITEMS} items, avg {np.mean([len(b) for b in baskets]):.2f} items/basket", flush=True)
    load(con, "bench_baskets", baskets)
    con.execute("SELECT count(*) FROM bench_baskets").fetchone()
    for ms in (0.005, 0.001):
        t_ours, o_sets, o_rules = ours(con, "bench_baskets", ms)
        t_peer, fi, rules = peer(baskets, ms)
        ref_sets = {tuple(sorted(s)): sup for s, sup in zip(fi["itemsets"], fi["support"])}
        ref_rules = {(tuple(sorted(x)), tuple(sorted(y))): (s, c) for x, y, s, c in
                     zip(rules["antecedents"], rules["consequents"], rules["support"], rules["confidence"])}
        d_sup = max((abs(sup - ref_sets.get(tuple(items), float("nan"))) for items, sup in o_sets), default=0)
        d_conf = max((abs(c - ref_rules.get((tuple(x), tuple(y)), (0, float("nan")))[1]) for x, y, s, c in o_rules), default=0)
        print(f"min_support {ms}: ours {t_ours:.3f} s  mlxtend {t_peer:.3f} s  ratio ours/peer {t_ours / t_peer:.3f}"
              f"{'  (target <= 0.2)' if ms == 0.005 else ''}")
        print(f"   itemsets ours {len(o_sets)} / mlxtend {len(ref_sets)}; rules (conf >= {a.min_confidence}) "
              f"ours {len(o_rules)} / mlxtend {len(ref_rules)}; max |support diff| {d_sup:.1e}, max |confidence diff| {d_conf:.1e}")

    # Cart recommendations per request, from a stored model.
    con.execute("DROP TABLE IF EXISTS bench_models")
    con.execute("CREATE TABLE bench_models AS SELECT 'bench'::text AS name, xsell.frequent_itemsets(items, 0.005) AS m FROM bench_baskets")
    rng = np.random.default_rng(7)
    lat = []
    for _ in range(300):
        cart = [f"item{i:03d}" for i in rng.choice(60, size=3, replace=False)]
        t = time.perf_counter()
        con.execute("SELECT * FROM xsell.recommend(%s, (SELECT m FROM bench_models WHERE name = 'bench'))", (cart,)).fetchall()
        lat.append((time.perf_counter() - t) * 1000)
    print(f"recommend latency (100k-basket model, 3-item cart, client round trip): median {statistics.median(lat):.2f} ms, "
          f"p95 {sorted(lat)[int(0.95 * len(lat))]:.2f} ms")

    if a.big:
        print(f"generating {a.big} baskets ...", flush=True)
        load(con, "bench_baskets_big", make_baskets(a.big, 43))
        pid = con.execute("SELECT pg_backend_pid()").fetchone()[0]
        con.execute("SET max_parallel_workers_per_gather = 0")
        t = time.perf_counter()
        n = con.execute(f"SELECT count(*) FROM xsell.rules((SELECT xsell.frequent_itemsets(items, 0.005) FROM bench_baskets_big), {a.min_confidence})").fetchone()[0]
        dt = time.perf_counter() - t
        hwm = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]
        print(f"{a.big} baskets, min_support 0.005: {dt:.2f} s, {n} rules, peak backend RSS {int(hwm) / 1024:.0f} MiB (serial plan)")
