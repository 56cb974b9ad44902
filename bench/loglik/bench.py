#!/usr/bin/env python3
"""bench/loglik: xsell.lm_loglik over 2,000 short generated product reviews in a table versus
transformers (SmolLM2-135M-Instruct from the Q4_1 GGUF, dequantized to float32, CPU) computing
the same 'bos' log-likelihood, in one run; then xsell.lm_rank (one context, 20 candidates) and
xsell.lm_generate (64 tokens, greedy) versus the same model in transformers.

Prints scored tokens/s on both sides and the ratio ours/peer, the max relative deviation of
the logliks, tokens/s and deviation of both sides on the 10 texts of the reference fixture
(tests/fixtures/reference), the lm_rank and lm_generate times and ratios, and the backend's
RSS after loading the LM (read from /proc: run this on the database server's machine).

The peer is timed one text at a time and in right-padded batches (--peer-batch, with an
attention mask); the faster of the two is the peer's time and the line says which.

  python bench/loglik/bench.py [--dsn ...] [--n 200] [--gen-tokens 64]

Environment: XSELL_BENCH_DSN, XSELL_BENCH_LM_N (texts), XSELL_BENCH_SMOLLM (GGUF file).
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hfpeer  # noqa: E402  (environment for the peers: before numpy / torch)

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import torch  # noqa: E402
from procstat import fmt_rss, proc_status  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

hfpeer.quiet()
HERE = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--dsn", default=os.environ.get("XSELL_BENCH_DSN", "host=localhost port=5433 user=postgres dbname=xsell_bench"))
p.add_argument("--n", type=int, default=int(os.environ.get("XSELL_BENCH_LM_N", 2000)), help="texts")
p.add_argument("--single-n", type=int, default=int(os.environ.get("XSELL_BENCH_LM_SINGLE_N", 200)),
               help="texts for the peer's one-at-a-time run (slow: a subset, reported as tok/s)")
p.add_argument("--gguf", default=os.environ.get("XSELL_BENCH_SMOLLM"), required="XSELL_BENCH_SMOLLM" not in os.environ,
               help="the installed GGUF file, for the peer (bench/run sets XSELL_BENCH_SMOLLM)")
p.add_argument("--peer-batch", type=int, default=16)
p.add_argument("--gen-tokens", type=int, default=64)
p.add_argument("--repeat", type=int, default=3, help="best of, for lm_rank and lm_generate")
p.add_argument("--reference", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "reference", "smollm2_loglik.json"))
a = p.parse_args()

CORES = os.cpu_count() or 1
torch.set_num_threads(CORES)  # ours runs with xsell.threads = 0: one thread per core
BOS = 1  # <|im_start|>, the 'bos' convention of the reference fixture

# ---------------------------------------------------------------- data (deterministic)
PRODUCT = ["wireless earbuds", "running shoes", "coffee grinder", "winter jacket", "desk lamp", "yoga mat",
           "phone charger", "backpack", "kitchen knife", "office chair", "water bottle", "smart watch",
           "blender", "rain boots", "bluetooth speaker", "wool scarf"]
OPINION = ["works great", "stopped working after two weeks", "is exactly as described", "feels cheap",
           "exceeded my expectations", "arrived damaged", "is worth every penny", "is a bit too small",
           "was easy to set up", "smells strange", "looks even better in person", "broke on the first day"]
DETAIL = ["The battery lasts all day.", "Shipping took only three days.", "Customer service was helpful.",
          "I would buy it again.", "The color is slightly different from the photo.", "My kids love it.",
          "Returned it for a refund.", "Five stars.", "The instructions were confusing.",
          "It is lighter than I expected.", "The price dropped a week later.", "Highly recommended for travel."]
OPENERS = ["This {p} {o}.", "The {p} I ordered {o}.", "Honestly, this {p} {o}.", "My new {p} {o}.",
           "Bought the {p} for my wife and it {o}.", "Second {p} from this brand and it {o}."]


def review_texts(n, seed=1234):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = OPENERS[rng.integers(len(OPENERS))].format(p=PRODUCT[rng.integers(len(PRODUCT))], o=OPINION[rng.integers(len(OPINION))])
        if rng.random() < 0.7:
            t += " " + DETAIL[rng.integers(len(DETAIL))]
        out.append(t)
    return out


# ---------------------------------------------------------------- peer
folder, name = os.path.split(os.path.abspath(a.gguf))
t = time.perf_counter()
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
t_load_peer = time.perf_counter() - t
PAD = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def ids_of(text):
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def peer_logliks(id_lists, batch):
    """'bos' log-likelihoods (float64 sums of float32 log-probs), `batch` sequences per padded forward."""
    out = []
    for s in range(0, len(id_lists), batch):
        chunk = [[BOS] + x for x in id_lists[s:s + batch]]
        L = max(len(x) for x in chunk)
        inp = torch.full((len(chunk), L), PAD, dtype=torch.long)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for i, x in enumerate(chunk):
            inp[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        logits = model(input_ids=inp, attention_mask=mask).logits
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(2, inp[:, 1:, None])[..., 0]
        for i, x in enumerate(chunk):
            out.append(float(lp[i, :len(x) - 1].double().sum()))
    return out


@torch.inference_mode()
def peer_rank(context, cands):
    """Harness loglikelihood of each candidate given the context (trailing context spaces move
    to the continuation), BOS + context + continuation, one padded batch."""
    trimmed = context.rstrip()
    ctx = ids_of(trimmed)
    rows, conts = [], []
    for c in cands:
        whole = ids_of(trimmed + context[len(trimmed):] + c)
        conts.append(whole[len(ctx):])
        rows.append([BOS] + whole)
    L = max(len(r) for r in rows)
    inp = torch.full((len(rows), L), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        inp[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    lp = torch.log_softmax(model(input_ids=inp, attention_mask=mask).logits.float(), dim=-1)
    res = []
    for i, (r, c) in enumerate(zip(rows, conts)):
        start = len(r) - len(c)  # position of the first continuation token
        res.append(float(sum(lp[i, start - 1 + k, tok_id].double() for k, tok_id in enumerate(c))))
    return res


texts = review_texts(a.n)
id_lists = [ids_of(x) for x in texts]
n_scored = sum(len(x) for x in id_lists)

with psycopg.connect(a.dsn, autocommit=True) as con:
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_xsell")
    con.execute("DROP TABLE IF EXISTS bench_lm_texts")
    con.execute("CREATE TABLE bench_lm_texts (id int PRIMARY KEY, body text NOT NULL)")
    with con.cursor().copy("COPY bench_lm_texts FROM STDIN") as cp:
        for i, x in enumerate(texts, 1):
            cp.write_row((i, x))
    con.execute("VACUUM ANALYZE bench_lm_texts")
    con.execute("SET max_parallel_workers_per_gather = 0")
    pid = con.execute("SELECT pg_backend_pid()").fetchone()[0]
    # The GUC exists once the library is loaded (cosine_similarity loads no model).
    con.execute("SELECT xsell.cosine_similarity(ARRAY[1]::real[], ARRAY[1]::real[])").fetchone()
    rss0 = proc_status(pid)
    threads = con.execute("SELECT current_setting('xsell.threads', true)").fetchone()[0]
    print(f"{a.n} review texts, {n_scored} scored tokens ({n_scored / a.n:.1f} per text, + BOS); "
          f"xsell.threads = {threads} ({CORES} cores), torch threads {torch.get_num_threads()}; "
          f"peer model loaded in {t_load_peer:.1f} s", flush=True)

    # First call loads the model: time it separately.
    t = time.perf_counter()
    con.execute("SELECT xsell.lm_loglik('warm-up')").fetchone()
    t_first = time.perf_counter() - t
    rss1 = proc_status(pid)
    print(f"first xsell.lm_loglik call of the backend (model load included): {1000 * t_first:.0f} ms")
    print(f"backend RSS before the LM (library loaded): {fmt_rss(rss0)}")
    print(f"backend RSS after loading the LM: {fmt_rss(rss1)}", flush=True)

    t = time.perf_counter()
    ours = [r[1] for r in con.execute("SELECT id, xsell.lm_loglik(body) FROM bench_lm_texts ORDER BY id").fetchall()]
    t_ours = time.perf_counter() - t
    # Token counts of ours on the first 20 texts (tokenizer agreement with transformers).
    n_check = min(20, a.n)
    n_ours = [r[0] for r in con.execute(
        "SELECT (SELECT count(*) FROM xsell.lm_token_logprobs(body)) FROM bench_lm_texts WHERE id <= %s ORDER BY id",
        (n_check,))]
    tok_agree = sum(x == len(y) for x, y in zip(n_ours, id_lists))

    # Peer: warm up, then one at a time and in padded batches.
    peer_logliks(id_lists[:4], 4)
    n1 = min(a.single_n, a.n)
    t = time.perf_counter()
    peer1 = peer_logliks(id_lists[:n1], 1)
    t_p1 = time.perf_counter() - t
    tps_p1 = sum(len(x) for x in id_lists[:n1]) / t_p1
    t = time.perf_counter()
    peerb = peer_logliks(id_lists, a.peer_batch)
    t_pb = time.perf_counter() - t
    tps_pb = n_scored / t_pb
    tps_ours = n_scored / t_ours
    best, how = (tps_p1, f"one text at a time, measured on {n1} texts") if tps_p1 > tps_pb else (tps_pb, f"padded batches of {a.peer_batch}")
    ours_a, peer_a = np.array(ours), np.array(peerb)
    rel = np.abs(ours_a - peer_a) / np.maximum(np.abs(peer_a), 1e-9)
    print(f"lm_loglik per row over {a.n} texts: ours {t_ours:.2f} s ({tps_ours:.0f} tok/s); transformers f32: "
          f"batches of {a.peer_batch} {t_pb:.2f} s ({tps_pb:.0f} tok/s), one at a time {tps_p1:.0f} tok/s (on {n1} texts)")
    print(f"   ratio ours/peer (tok/s) vs batched {tps_ours / tps_pb:.2f} (target >= 1.5), vs unbatched {tps_ours / tps_p1:.2f}; "
          f"best peer: {how}")
    print(f"   max relative deviation of logliks {rel.max():.2e} (median {np.median(rel):.1e}, max abs "
          f"{np.abs(ours_a - peer_a).max():.2e}); token counts equal to the transformers tokenizer's on {tok_agree}/{n_check} texts; "
          f"peer one-at-a-time vs batched max abs {np.abs(np.array(peer1) - np.array(peerb[:n1])).max():.1e}", flush=True)

    # Both sides against the reference fixture ('bos' convention).
    try:
        ref = json.load(open(a.reference))
        items = ref["items"]
        tok_ok = sum(ids_of(it["text"]) == it["input_ids"] for it in items)
        r_ref = np.array([it["bos"]["loglik"] for it in items])
        ref_ids = [it["input_ids"] for it in items]
        ref_tokens = sum(len(x) for x in ref_ids)
        con.execute("DROP TABLE IF EXISTS bench_lm_reference")
        con.execute("CREATE TABLE bench_lm_reference (id int PRIMARY KEY, body text NOT NULL)")
        with con.cursor().copy("COPY bench_lm_reference FROM STDIN") as cp:
            for i, it in enumerate(items, 1):
                cp.write_row((i, it["text"]))
        # Tokens/s on the reference texts (longer than the reviews), best of --repeat on both sides.
        t_ref_ours, t_ref_p1, t_ref_pb = [], [], []
        for _ in range(a.repeat):
            t = time.perf_counter()
            r_ours = np.array([r[0] for r in con.execute(
                "SELECT xsell.lm_loglik(body) FROM bench_lm_reference ORDER BY id").fetchall()])
            t_ref_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            r_peer = np.array(peer_logliks(ref_ids, 1))
            t_ref_p1.append(time.perf_counter() - t)
            t = time.perf_counter()
            peer_logliks(ref_ids, a.peer_batch)
            t_ref_pb.append(time.perf_counter() - t)
        tr_o, tr_1, tr_b = (ref_tokens / min(x) for x in (t_ref_ours, t_ref_p1, t_ref_pb))
        rel_ref = np.abs(r_ours - r_ref) / np.abs(r_ref)
        print(f"reference fixture ({len(items)} texts, {ref_tokens} scored tokens, 'bos'): per row ours {tr_o:.0f} tok/s, "
              f"transformers f32 batched {tr_b:.0f} tok/s, one at a time {tr_1:.0f} tok/s (best of {a.repeat})", flush=True)
        print(f"   ratio ours/peer (tok/s) vs batched {tr_o / tr_b:.2f}, vs unbatched {tr_o / tr_1:.2f}; "
              f"max relative deviation from the reference ours {rel_ref.max():.2e} (target 5e-3, max abs "
              f"{np.abs(r_ours - r_ref).max():.2e}), transformers here {np.abs(r_peer - r_ref).max():.2e} abs; "
              f"tokenizer ids match {tok_ok}/{len(items)}", flush=True)
    except OSError as e:
        print(f"reference fixture not read: {e}")

    # lm_rank: one context, 20 candidate next-purchase categories.
    context = "A customer recently bought: running shoes, a yoga mat, protein powder. The next thing they will buy is from the category"
    cands = [" " + c for c in ["electronics", "books", "kitchen", "outdoor", "fitness", "beauty", "toys", "grocery",
                               "garden", "pet supplies", "office", "music", "automotive", "jewelry", "shoes",
                               "furniture", "baby", "health", "video games", "travel"]]
    con.execute("SELECT count(*) FROM xsell.lm_rank(%s, %s)", (context, cands)).fetchone()
    tr = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        rank_rows = con.execute("SELECT candidate, loglik, rank FROM xsell.lm_rank(%s, %s)", (context, cands)).fetchall()
        tr.append(time.perf_counter() - t)
    peer_rank(context, cands[:2])
    tp = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        pr = peer_rank(context, cands)
        tp.append(time.perf_counter() - t)
    o = {c: ll for c, ll, _ in rank_rows}
    ours_order = [c for c, _, _ in sorted(rank_rows, key=lambda r: r[2])]
    peer_order = [c for _, c in sorted(zip(pr, cands), key=lambda x: -x[0])]
    print(f"lm_rank, 1 context x {len(cands)} candidates: ours {1000 * min(tr):.0f} ms, transformers (one padded batch) "
          f"{1000 * min(tp):.0f} ms, ratio ours/peer (time) {min(tr) / min(tp):.2f}; max abs loglik diff "
          f"{max(abs(o[c] - v) for c, v in zip(cands, pr)):.2e}; same ranking: {ours_order == peer_order}", flush=True)

    # lm_generate: greedy, chat template (the function's default), 64 tokens.
    prompt = "Write a detailed product description for a pair of waterproof hiking boots."
    notes = []
    con.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
    con.execute("SELECT set_config('xsell.verbose', 'on', false)")  # VERBOSE is a keyword: no SET
    tg, gen = [], None
    for _ in range(a.repeat):
        notes.clear()
        t = time.perf_counter()
        gen = con.execute("SELECT xsell.lm_generate(%s, %s)", (prompt, a.gen_tokens)).fetchone()[0]
        tg.append(time.perf_counter() - t)
    con.execute("SELECT set_config('xsell.verbose', 'off', false)")
    m = [re.search(r"generated (\d+) tokens after a (\d+)-token prompt", x) for x in notes]
    m = [x for x in m if x]
    n_gen_ours = int(m[-1].group(1)) if m else len(ids_of(gen))
    n_prompt_ours = int(m[-1].group(2)) if m else None
    rss2 = proc_status(pid)

    chat = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)
    inp = chat["input_ids"]
    with torch.inference_mode():
        model.generate(**chat, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
        tpg, out = [], None
        for _ in range(a.repeat):
            t = time.perf_counter()
            out = model.generate(**chat, max_new_tokens=a.gen_tokens, do_sample=False, pad_token_id=PAD)
            tpg.append(time.perf_counter() - t)
    new = out[0, inp.shape[1]:].tolist()
    eos = set([tok.eos_token_id] if isinstance(tok.eos_token_id, int) else (tok.eos_token_id or []))
    eos |= {i for i in (tok.convert_tokens_to_ids("<|im_end|>"),) if isinstance(i, int)}
    while new and new[-1] in eos:
        new.pop()
    peer_text = tok.decode(new, skip_special_tokens=True)
    ours_ids = ids_of(gen)
    common = next((i for i, (x, y) in enumerate(zip(ours_ids, new)) if x != y), min(len(ours_ids), len(new)))
    print(f"lm_generate greedy, {a.gen_tokens} tokens max, chat template: ours {min(tg):.2f} s for {n_gen_ours} tokens "
          f"({n_gen_ours / min(tg):.1f} tok/s, prompt {n_prompt_ours} tokens), transformers generate {min(tpg):.2f} s for "
          f"{len(new)} tokens ({len(new) / min(tpg):.1f} tok/s, prompt {inp.shape[1]} tokens)")
    print(f"   ratio ours/peer (tok/s) {(n_gen_ours / min(tg)) / (len(new) / min(tpg)):.2f}; same text: {gen == peer_text} "
          f"(first {common} tokens agree)")
    if gen != peer_text:
        print(f"   ours: {gen[:200]!r}\n   peer: {peer_text[:200]!r}")
    print(f"backend RSS after lm_loglik, lm_rank and lm_generate: {fmt_rss(rss2)}")
    me = proc_status(os.getpid())
    if me:
        print(f"(peer process, transformers f32 model loaded: VmRSS {me['VmRSS']:.0f} MiB, VmHWM {me['VmHWM']:.0f} MiB)")
