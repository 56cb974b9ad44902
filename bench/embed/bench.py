#!/usr/bin/env python3
"""bench/embed: xsell.embed (per row) and xsell.embed_batch over 2,000 short product texts in a
table versus sentence-transformers all-MiniLM-L6-v2 encode(batch_size=32) on the same texts
(CPU, float32), in one run.

Prints sentences/s on both sides and the ratios ours/peer (targets: embed_batch >= 1.0,
per-row xsell.embed >= 0.5 of the peer's batched rate), the useful GFLOP/s each reaches
against this machine's f32 matrix-multiply peak, the min cosine between our vectors and the
peer's, first-call latency of a new backend, RSS of 4 concurrent backends after they embedded
something (read from /proc: run this on the database server's machine), and pgbench
throughput of 8 sessions calling xsell.top_intent (target: zero failed transactions).

  python bench/embed/bench.py [--dsn ...] [--n 2000] [--pgbench-seconds 60]

Environment: XSELL_BENCH_DSN, XSELL_BENCH_N (texts), XSELL_BENCH_PGBENCH_SECONDS,
XSELL_BENCH_MINILM (model folder), XSELL_BENCH_PGBENCH (pgbench binary).
"""
import argparse
import os
import re
import subprocess
import tempfile
import threading
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hfpeer  # noqa: E402  (environment for the peers: before numpy / torch)

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import torch  # noqa: E402
from procstat import fmt_rss, proc_status  # noqa: E402
from psycopg.conninfo import conninfo_to_dict  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

hfpeer.quiet()

p = argparse.ArgumentParser()
p.add_argument("--dsn", default=os.environ.get("XSELL_BENCH_DSN", "host=localhost port=5433 user=postgres dbname=xsell_bench"))
p.add_argument("--n", type=int, default=int(os.environ.get("XSELL_BENCH_N", 2000)), help="product texts")
p.add_argument("--model", default=os.environ.get("XSELL_BENCH_MINILM"), required="XSELL_BENCH_MINILM" not in os.environ, help="the installed model folder, for the peer (bench/run sets XSELL_BENCH_MINILM)")
p.add_argument("--peak-gflops", type=float, default=270.0, help="f32 matmul peak of this machine (OpenBLAS sgemm)")
p.add_argument("--sessions", type=int, default=4, help="concurrent sessions for the RSS measurement")
p.add_argument("--clients", type=int, default=8, help="pgbench sessions")
p.add_argument("--pgbench-seconds", type=int, default=int(os.environ.get("XSELL_BENCH_PGBENCH_SECONDS", 60)))
p.add_argument("--pgbench", default=os.environ.get("XSELL_BENCH_PGBENCH", "pgbench"))
a = p.parse_args()

CORES = os.cpu_count() or 1
torch.set_num_threads(CORES)  # ours runs with xsell.threads = 0: one thread per core

# ---------------------------------------------------------------- data (deterministic)
ADJ = ["Lightweight", "Waterproof", "Classic", "Slim", "Heavy-duty", "Organic", "Wireless", "Compact",
       "Premium", "Vintage", "Ergonomic", "Foldable", "Insulated", "Rechargeable", "Stainless", "Soft"]
COLOR = ["black", "white", "navy", "red", "olive", "grey", "beige", "teal", "pink", "silver"]
MATERIAL = ["cotton", "leather", "bamboo", "steel", "wool", "nylon", "ceramic", "oak", "linen", "silicone"]
NOUN = ["running shoes", "backpack", "coffee mug", "desk lamp", "yoga mat", "rain jacket", "water bottle",
        "headphones", "cutting board", "throw blanket", "phone case", "office chair", "sunglasses",
        "wallet", "tent", "blender", "keyboard", "garden hose", "dog bed", "scarf"]
FEATURE = ["with breathable mesh", "for everyday use", "with USB-C charging", "for camping and hiking",
           "with a lifetime warranty", "that fits in any bag", "with anti-slip grip", "for kids and adults",
           "with noise cancelling", "dishwasher safe", "with reinforced stitching", "in a gift box"]
SIZE = ["size S", "size M", "size L", "10 x 20 cm", "500 ml", "1 litre", "2-pack", "set of 4", "42 EU", "one size"]


def product_texts(n, seed=20240611):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = f"{ADJ[rng.integers(len(ADJ))]} {COLOR[rng.integers(len(COLOR))]} {MATERIAL[rng.integers(len(MATERIAL))]} " \
            f"{NOUN[rng.integers(len(NOUN))]}"
        if rng.random() < 0.8:
            t += " " + FEATURE[rng.integers(len(FEATURE))]
        if rng.random() < 0.5:
            t += ", " + SIZE[rng.integers(len(SIZE))]
        out.append(t)
    return out


INTENTS = ["track my order", "return or refund a product", "product question", "shipping cost and delivery time",
           "cancel my order", "change payment method", "complaint about a damaged item", "talk to a human agent"]
QUERY_TEMPLATES = [
    "where is my {n}? it has not arrived yet", "I want to send back the {n} I bought", "does the {n} come in {c}?",
    "how much is shipping for a {n}", "please cancel the order for the {n}", "can I pay for the {n} with paypal",
    "my {n} arrived broken", "I need to speak to someone about my {n}", "is the {n} made of {m}?",
    "when will the {n} be delivered", "refund for the {n} please", "the {n} is scratched and the box was open",
]


def queries(n=200, seed=7):
    rng = np.random.default_rng(seed)
    return [QUERY_TEMPLATES[rng.integers(len(QUERY_TEMPLATES))].format(
        n=NOUN[rng.integers(len(NOUN))], c=COLOR[rng.integers(len(COLOR))], m=MATERIAL[rng.integers(len(MATERIAL))])
        for _ in range(n)]


def vecs(rows):
    return np.array([r[1] for r in sorted(rows, key=lambda r: r[0])], dtype=np.float32)


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


texts = product_texts(a.n)
qs = queries()

with psycopg.connect(a.dsn, autocommit=True) as con:
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_xsell")
    con.execute("DROP TABLE IF EXISTS bench_embed_products")
    con.execute("CREATE TABLE bench_embed_products (id int PRIMARY KEY, title text NOT NULL)")
    with con.cursor().copy("COPY bench_embed_products FROM STDIN") as cp:
        for i, t in enumerate(texts, 1):
            cp.write_row((i, t))
    con.execute("DROP TABLE IF EXISTS bench_embed_queries")
    con.execute("CREATE TABLE bench_embed_queries (id int PRIMARY KEY, q text NOT NULL)")
    with con.cursor().copy("COPY bench_embed_queries FROM STDIN") as cp:
        for i, t in enumerate(qs, 1):
            cp.write_row((i, t))
    con.execute("VACUUM ANALYZE bench_embed_products")
    con.execute("VACUUM ANALYZE bench_embed_queries")
    # The GUC exists once the library is loaded: make one call first.
    con.execute("SELECT xsell.cosine_similarity(ARRAY[1]::real[], ARRAY[1]::real[])").fetchone()
    threads = con.execute("SELECT current_setting('xsell.threads', true)").fetchone()[0]

    # Peer: load the model and count tokens with its tokenizer (truncated to 256, with [CLS]/[SEP]).
    st = SentenceTransformer(a.model, device="cpu")
    ntok = np.array([len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=min(256, st.max_seq_length))["input_ids"]])
    per_text = 2 * ntok * (4 * 384 * 384 + 2 * 384 * 1536) * 6 + 2 * 2 * ntok * ntok * 384 * 6
    gflop = per_text.sum() / 1e9
    print(f"{a.n} product texts, {ntok.mean():.1f} tokens on average (min {ntok.min()}, max {ntok.max()}), "
          f"{gflop:.2f} GFLOP of useful matmul work; xsell.threads = {threads} ({CORES} cores), "
          f"torch threads {torch.get_num_threads()}", flush=True)

    # First call of a new backend: connect, then the first xsell.embed (loads the model), then a second call.
    for i in range(3):
        t0 = time.perf_counter()
        with psycopg.connect(a.dsn, autocommit=True) as c1:
            t1 = time.perf_counter()
            c1.execute("SELECT xsell.embed('first call of a new backend')").fetchone()
            t2 = time.perf_counter()
            c1.execute("SELECT xsell.embed('second call of the same backend')").fetchone()
            t3 = time.perf_counter()
        print(f"first-call latency, new backend #{i + 1}: connect {1000 * (t1 - t0):.0f} ms, first xsell.embed "
              f"{1000 * (t2 - t1):.0f} ms (model load included), second call {1000 * (t3 - t2):.1f} ms", flush=True)

    # Ours, warm (the model was loaded by a first call on this backend).
    con.execute("SET max_parallel_workers_per_gather = 0")
    con.execute("SELECT xsell.embed('warm-up')").fetchone()
    cur = con.cursor(binary=True)
    t = time.perf_counter()
    rows_b = cur.execute("SELECT b.ord, b.embedding FROM (SELECT array_agg(title ORDER BY id) t FROM bench_embed_products) a, "
                         "xsell.embed_batch(a.t) b").fetchall()
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    rows_r = cur.execute("SELECT id, xsell.embed(title) FROM bench_embed_products").fetchall()
    t_row = time.perf_counter() - t

    # Peer, warm.
    st.encode(texts[:64], batch_size=32)
    t = time.perf_counter()
    ref = st.encode(texts, batch_size=32, convert_to_numpy=True)
    t_peer = time.perf_counter() - t

    ours_b, ours_r, ref = vecs(rows_b), vecs(rows_r), np.asarray(ref, dtype=np.float32)
    assert ours_b.shape == ref.shape == ours_r.shape, (ours_b.shape, ours_r.shape, ref.shape)
    cos_b = (unit(ours_b.astype(np.float64)) * unit(ref.astype(np.float64))).sum(1)
    cos_r = (unit(ours_r.astype(np.float64)) * unit(ref.astype(np.float64))).sum(1)
    sps_b, sps_r, sps_p = a.n / t_batch, a.n / t_row, a.n / t_peer
    gf = lambda s: gflop / s  # noqa: E731
    print(f"embed_batch (one array of {a.n}, fetched): {t_batch:.2f} s, {sps_b:.0f} sentences/s, {gf(t_batch):.1f} GFLOP/s "
          f"({100 * gf(t_batch) / a.peak_gflops:.0f}% of {a.peak_gflops:.0f} peak)")
    print(f"embed per row (fetched):                  {t_row:.2f} s, {sps_r:.0f} sentences/s, {gf(t_row):.1f} GFLOP/s "
          f"({100 * gf(t_row) / a.peak_gflops:.0f}% of peak)")
    print(f"sentence-transformers encode(batch 32):   {t_peer:.2f} s, {sps_p:.0f} sentences/s, {gf(t_peer):.1f} GFLOP/s "
          f"({100 * gf(t_peer) / a.peak_gflops:.0f}% of peak)")
    print(f"   ratio ours/peer (sentences/s): embed_batch {sps_b / sps_p:.2f} (target >= 1.0), "
          f"per-row embed {sps_r / sps_p:.2f} (target >= 0.5)")
    print(f"   cosine ours vs sentence-transformers: embed_batch min {cos_b.min():.6f} (mean {cos_b.mean():.6f}), "
          f"per-row min {cos_r.min():.6f}; max |batch - per-row| {np.abs(ours_b - ours_r).max():.1e}", flush=True)

    # top_intent agreement with the peer (argmax cosine over the same labels).
    lab = "ARRAY[" + ",".join("'" + x.replace("'", "''") + "'" for x in INTENTS) + "]"
    ours_top = [r[0] for r in con.execute(f"SELECT xsell.top_intent(q, {lab}) FROM bench_embed_queries ORDER BY id")]
    qv, lv = st.encode(qs, batch_size=32), st.encode(INTENTS, batch_size=32)
    peer_top = [INTENTS[i] for i in (unit(qv) @ unit(lv).T).argmax(1)]
    print(f"top_intent over {len(qs)} queries x {len(INTENTS)} labels: agrees with sentence-transformers argmax on "
          f"{sum(x == y for x, y in zip(ours_top, peer_top))}/{len(qs)}", flush=True)

# RSS per backend with N concurrent sessions, each after embedding something.
conns = [psycopg.connect(a.dsn, autocommit=True) for _ in range(a.sessions)]
try:
    pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns]
    before = [proc_status(pid) for pid in pids]
    errs = []

    def work(c, i):
        try:
            c.execute("SELECT count(xsell.embed(title)) FROM bench_embed_products WHERE id <= 32").fetchone()
            c.execute("SELECT xsell.top_intent(%s, %s)", (qs[i], INTENTS)).fetchone()
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ths = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(conns)]
    t = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    dt = time.perf_counter() - t
    print(f"{a.sessions} concurrent sessions, each loading the model, embedding 32 texts and one top_intent: {dt:.2f} s wall"
          f"{', errors: ' + repr(errs) if errs else ''}")
    if before[0] is not None:
        print(f"   fresh backend before embedding: {fmt_rss(before[0])}")
    after = [proc_status(pid) for pid in pids]
    for pid, d in zip(pids, after):
        print(f"   backend {pid}: {fmt_rss(d)}")
    if all(d is not None for d in after):
        print(f"   sum over {a.sessions} backends: RssAnon {sum(d['RssAnon'] for d in after):.0f} MiB (private), "
              f"RssFile {sum(d['RssFile'] for d in after):.0f} MiB (file pages, shareable: mapped model weights)", flush=True)
finally:
    for c in conns:
        c.close()

# pgbench: 8 sessions calling xsell.top_intent on random queries.
info = conninfo_to_dict(a.dsn)
args = [a.pgbench, "-n", "-c", str(a.clients), "-j", str(min(a.clients, CORES)), "-T", str(a.pgbench_seconds)]
for opt, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
    if info.get(key):
        args += [opt, str(info[key])]
env = dict(os.environ)
if info.get("password"):
    env["PGPASSWORD"] = str(info["password"])
with tempfile.TemporaryDirectory() as d:
    script = os.path.join(d, "top_intent.sql")
    with open(script, "w") as f:
        f.write(f"\\set id random(1, {len(qs)})\n"
                f"SELECT xsell.top_intent((SELECT q FROM bench_embed_queries WHERE id = :id), {lab});\n")
    args += ["-f", script, info.get("dbname") or "xsell_bench"]
    print(f"pgbench: {a.clients} sessions x {a.pgbench_seconds} s of xsell.top_intent ({len(INTENTS)} labels) ...", flush=True)
    r = subprocess.run(args, env=env, capture_output=True, text=True)
out = r.stdout + r.stderr


def grab(pattern):
    m = re.search(pattern, out)
    return m.group(1) if m else "?"


tps = grab(r"tps = ([\d.]+) \(without initial connection time\)")
done = grab(r"number of transactions actually processed: (\d+)")
failed = grab(r"number of failed transactions: (\d+)")
lat = grab(r"latency average = ([\d.]+ ms)")
aborted = re.findall(r"client \d+ aborted.*|.*ERROR:.*", out)
print(f"pgbench top_intent: {tps} tps, {done} transactions, failed {failed if failed != '?' else 0}, "
      f"latency average {lat}, exit code {r.returncode} (target: zero failed, exit 0)")
if r.returncode != 0 or aborted:
    print("   " + "\n   ".join((aborted or out.strip().splitlines())[:10]))
