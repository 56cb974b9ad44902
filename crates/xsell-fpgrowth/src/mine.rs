//! FP-growth (Han, Pei & Yin, 2000) over a [`Baskets`] collector.

use crate::baskets::FxHashMap;
use crate::progress::{Phase, Progress, Shared, run_on_pool};
use crate::{Baskets, FpError, ItemKey, Itemset, Itemsets};
use rayon::prelude::*;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};

/// Options of [`mine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MineOptions {
    /// Maximum number of items in a frequent itemset (mlxtend's `max_len`). Default 4; must be
    /// at least 1.
    pub max_len: usize,
    /// Maximum number of frequent itemsets (all lengths together) before mining stops with
    /// [`FpError::LimitExceeded`]. Default 1,000,000; must be at least 1.
    pub max_itemsets: usize,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            max_len: 4,
            max_itemsets: 1_000_000,
        }
    }
}

/// The smallest basket count `c` (in `1..=n_baskets`) whose support `c as f64 / n_baskets as
/// f64` is `>= min_support`, i.e. the count from which a single item is frequent, with exactly
/// the floating-point comparison mlxtend makes. Returns 1 when `n_baskets` is 0, and
/// `n_baskets + 1` if no count qualifies (only for `min_support > 1` or NaN).
pub fn min_count(min_support: f64, n_baskets: u64) -> u64 {
    if n_baskets == 0 {
        return 1;
    }
    let nf = n_baskets as f64;
    let qualifies = |c: u64| (c as f64 / nf) >= min_support;
    let est = (min_support * nf).ceil();
    let mut c = if est.is_nan() || est < 1.0 {
        1
    } else if est >= nf {
        n_baskets
    } else {
        est as u64
    };
    while c > 1 && qualifies(c - 1) {
        c -= 1;
    }
    while c <= n_baskets && !qualifies(c) {
        c += 1;
    }
    c
}

/// Mines all frequent itemsets of `baskets` with FP-growth.
///
/// An itemset is returned with its count exactly when mlxtend 0.25
/// `fpgrowth(df, min_support, max_len=max_len)` on the one-hot encoding of the same baskets
/// returns it (with `support == count / n_baskets`):
/// - a single item is frequent iff `count as f64 / n as f64 >= min_support` (see [`min_count`]);
/// - an itemset of two or more items must in addition reach mlxtend's conditional-tree count
///   `ceil(min_support * n)` (computed in `f64`). The two thresholds differ only when
///   `min_support * n` rounds above an integer, e.g. `0.07 * 100 = 7.000000000000001`: then a
///   pair in 7 of 100 baskets is not frequent although its support is 0.07. As in mlxtend, this
///   second threshold does not apply when the frequent items of all baskets form a chain under
///   inclusion (mlxtend's single-path FP-tree shortcut).
///
/// The result is in canonical order ([`Itemsets::canonical_cmp`]) and downward closed.
///
/// Work runs on `pool` (counting, tree building and the per-item conditional trees are
/// parallel); `progress` is called on the calling thread about every 20 ms (see
/// [`Progress`] for the cancellation contract). Called from a thread of `pool` itself, the work
/// runs inline on that thread's pool instead and `progress` is only called before and after.
///
/// # Errors
/// - [`FpError::InvalidParameter`]: `min_support` NaN or outside `(0, 1]`, `max_len == 0`,
///   `max_itemsets == 0`;
/// - [`FpError::LimitExceeded`]: more than `max_itemsets` frequent itemsets, or an FP-tree too
///   large for 32-bit node ids.
///
/// Zero baskets yield an empty result.
pub fn mine<K: ItemKey>(
    baskets: &Baskets<K>,
    min_support: f64,
    opts: &MineOptions,
    pool: &rayon::ThreadPool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Itemsets<K>, FpError> {
    if min_support.is_nan() || min_support <= 0.0 || min_support > 1.0 {
        return Err(FpError::InvalidParameter(format!(
            "min_support must be in (0, 1], got {min_support}"
        )));
    }
    if opts.max_len < 1 {
        return Err(FpError::InvalidParameter(
            "max_len must be at least 1".into(),
        ));
    }
    if opts.max_itemsets < 1 {
        return Err(FpError::InvalidParameter(
            "max_itemsets must be at least 1".into(),
        ));
    }
    let n = baskets.n_baskets();
    let empty = Itemsets {
        n_baskets: n,
        min_support,
        max_len: opts.max_len,
        itemsets: Vec::new(),
    };
    if n == 0 {
        return Ok(empty);
    }
    let shared = Shared::new(Phase::CountingItems);
    let result = run_on_pool(pool, &shared, progress, || {
        mine_job(baskets, min_support, opts, &shared)
    });
    match result {
        Ok(itemsets) => Ok(Itemsets { itemsets, ..empty }),
        Err(Stop::Limit) => Err(FpError::LimitExceeded(format!(
            "more than {} frequent itemsets at min_support {min_support} and max_len {}; \
             raise min_support or lower max_len (or raise max_itemsets)",
            opts.max_itemsets, opts.max_len
        ))),
        Err(Stop::TooLarge) => Err(FpError::LimitExceeded(
            "the FP-tree would exceed 2^32 nodes; raise min_support or mine fewer baskets".into(),
        )),
        // A cancellation only happens when the progress callback panicked, and run_on_pool
        // resumes that panic instead of returning.
        Err(Stop::Cancelled) => Err(FpError::LimitExceeded("mining was cancelled".into())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    Limit,
    TooLarge,
}

/// Frequent itemsets found by one task, over top-level ranks.
#[derive(Default)]
struct Out {
    items: Vec<u32>,
    lens: Vec<u32>,
    counts: Vec<u64>,
}

impl Out {
    fn push(&mut self, prefix: &[u32], last: u32, count: u64) {
        self.items.extend_from_slice(prefix);
        self.items.push(last);
        self.lens.push(prefix.len() as u32 + 1);
        self.counts.push(count);
    }
}

struct Ctx<'a> {
    max_len: usize,
    max_itemsets: u64,
    min_count_multi: u64,
    shared: &'a Shared,
    limit_hit: AtomicBool,
}

impl Ctx<'_> {
    /// Accounts for `k` more itemsets against the limit.
    fn reserve(&self, k: u64) -> Result<(), Stop> {
        let before = self.shared.found.fetch_add(k, AtOrd::Relaxed);
        if before.saturating_add(k) > self.max_itemsets {
            self.limit_hit.store(true, AtOrd::Relaxed);
            return Err(Stop::Limit);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), Stop> {
        if self.shared.cancelled() {
            Err(Stop::Cancelled)
        } else if self.limit_hit.load(AtOrd::Relaxed) {
            Err(Stop::Limit)
        } else {
            Ok(())
        }
    }
}

/// A prefix tree of weighted transactions. Node 0 is the root. Items are local ids `0..k`,
/// ordered so that every root-to-leaf path has increasing ids.
struct Tree {
    /// (item, parent) per node, together so that walking up a path touches one array
    node: Vec<(u32, u32)>,
    count: Vec<u64>,
    /// the nodes of item `x` are `1 + head_off[x] .. 1 + head_off[x + 1]`
    head_off: Vec<u32>,
    item_count: Vec<u64>,
    single_path: bool,
}

impl Tree {
    fn nodes_of(&self, x: usize) -> std::ops::Range<usize> {
        1 + self.head_off[x] as usize..1 + self.head_off[x + 1] as usize
    }
}

/// Incremental FP-tree construction: transactions are inserted one by one (any order); the
/// children of the root are found through an array, deeper children through a hash map keyed
/// by (parent, item).
struct TreeBuilder {
    item: Vec<u32>,
    count: Vec<u64>,
    parent: Vec<u32>,
    has_child: Vec<bool>,
    root_child: Vec<u32>,
    children: FxHashMap<u64, u32>,
    item_count: Vec<u64>,
    branching: bool,
}

impl TreeBuilder {
    fn new(k: usize, node_cap: usize) -> Self {
        let cap = node_cap.saturating_add(1);
        let mut b = TreeBuilder {
            item: Vec::with_capacity(cap),
            count: Vec::with_capacity(cap),
            parent: Vec::with_capacity(cap),
            has_child: Vec::with_capacity(cap),
            root_child: vec![u32::MAX; k],
            children: FxHashMap::default(),
            item_count: vec![0u64; k],
            branching: false,
        };
        b.children.reserve(node_cap.min(1 << 20));
        b.item.push(u32::MAX);
        b.count.push(0);
        b.parent.push(0);
        b.has_child.push(false);
        b
    }

    fn new_node(&mut self, it: u32, w: u64, parent: u32) -> Result<u32, Stop> {
        let id = self.item.len();
        if id >= u32::MAX as usize {
            return Err(Stop::TooLarge);
        }
        self.item.push(it);
        self.count.push(w);
        self.parent.push(parent);
        self.has_child.push(false);
        let p = &mut self.has_child[parent as usize];
        self.branching |= *p;
        *p = true;
        Ok(id as u32)
    }

    /// Inserts a transaction whose items are ascending local ids, with weight `w`.
    fn insert(&mut self, tx: &[u32], w: u64) -> Result<(), Stop> {
        let Some((&first, rest)) = tx.split_first() else {
            return Ok(());
        };
        self.item_count[first as usize] += w;
        let mut node = self.root_child[first as usize];
        if node == u32::MAX {
            node = self.new_node(first, w, 0)?;
            self.root_child[first as usize] = node;
        } else {
            self.count[node as usize] += w;
        }
        for &it in rest {
            self.item_count[it as usize] += w;
            let key = (u64::from(node) << 32) | u64::from(it);
            let next = self.item.len();
            node = match self.children.entry(key) {
                Entry::Occupied(e) => {
                    let c = *e.get();
                    self.count[c as usize] += w;
                    c
                }
                Entry::Vacant(v) => {
                    if next >= u32::MAX as usize {
                        return Err(Stop::TooLarge);
                    }
                    v.insert(next as u32);
                    self.item.push(it);
                    self.count.push(w);
                    self.parent.push(node);
                    self.has_child.push(false);
                    let p = &mut self.has_child[node as usize];
                    self.branching |= *p;
                    *p = true;
                    next as u32
                }
            };
        }
        Ok(())
    }

    fn finish(self) -> Tree {
        Tree::from_parts(
            self.item,
            self.count,
            self.parent,
            self.item_count,
            !self.branching,
        )
    }

    /// Joins trees built from transactions with pairwise different first items into one tree
    /// (their root subtrees are disjoint, so the root's children are simply collected).
    fn join(parts: Vec<TreeBuilder>, k: usize) -> Result<Tree, Stop> {
        let n_nodes = 1 + parts.iter().map(|p| p.item.len() - 1).sum::<usize>();
        if n_nodes >= u32::MAX as usize {
            return Err(Stop::TooLarge);
        }
        let mut item = Vec::with_capacity(n_nodes);
        let mut count = Vec::with_capacity(n_nodes);
        let mut parent = Vec::with_capacity(n_nodes);
        item.push(u32::MAX);
        count.push(0);
        parent.push(0);
        let mut item_count = vec![0u64; k];
        let nonempty = parts.iter().filter(|p| p.item.len() > 1).count();
        let mut branching = nonempty > 1;
        for p in parts {
            branching |= p.branching;
            let off = item.len() as u32 - 1;
            item.extend_from_slice(&p.item[1..]);
            count.extend_from_slice(&p.count[1..]);
            parent.extend(
                p.parent[1..]
                    .iter()
                    .map(|&q| if q == 0 { 0 } else { q + off }),
            );
            for (a, b) in item_count.iter_mut().zip(&p.item_count) {
                *a += b;
            }
        }
        Ok(Tree::from_parts(
            item, count, parent, item_count, !branching,
        ))
    }
}

impl Tree {
    /// Builds the final tree from node arrays (node 0 = root), renumbering the nodes so that
    /// those of each item are contiguous (ascending item order): the nodes of an item are then
    /// read sequentially when its conditional tree is built. In a single-path tree this order
    /// is the path order.
    fn from_parts(
        item: Vec<u32>,
        count: Vec<u64>,
        parent: Vec<u32>,
        item_count: Vec<u64>,
        single_path: bool,
    ) -> Tree {
        let k = item_count.len();
        let n = item.len();
        let mut head_off = vec![0u32; k + 1];
        for &it in &item[1..] {
            head_off[it as usize + 1] += 1;
        }
        for i in 0..k {
            head_off[i + 1] += head_off[i];
        }
        let mut fill = head_off.clone();
        let mut new_id = vec![0u32; n];
        for (nd, &it) in item.iter().enumerate().skip(1) {
            let slot = &mut fill[it as usize];
            new_id[nd] = *slot + 1;
            *slot += 1;
        }
        let mut node = vec![(u32::MAX, 0u32); n];
        let mut cnt = vec![0u64; n];
        for nd in 1..n {
            let j = new_id[nd] as usize;
            node[j] = (item[nd], new_id[parent[nd] as usize]);
            cnt[j] = count[nd];
        }
        Tree {
            node,
            count: cnt,
            head_off,
            item_count,
            single_path,
        }
    }
}

/// Weighted transactions stored flat, with a sort order.
#[derive(Default)]
struct TxBuf {
    flat: Vec<u32>,
    starts: Vec<usize>,
    weights: Vec<u64>,
}

impl TxBuf {
    fn clear(&mut self) {
        self.flat.clear();
        self.starts.clear();
        self.starts.push(0);
        self.weights.clear();
    }
    fn tx(&self, i: usize) -> &[u32] {
        &self.flat[self.starts[i]..self.starts[i + 1]]
    }
    fn len(&self) -> usize {
        self.weights.len()
    }
}

/// Reusable buffers of one worker's conditional tree construction.
#[derive(Default)]
struct Scratch {
    cnt: Vec<u64>,
    new_id: Vec<u32>,
    paths: TxBuf,
    txs: TxBuf,
}

/// The conditional FP-tree of item `x` in `tree`: the prefix paths of `x`'s nodes, weighted by
/// the nodes' counts, restricted to items whose count in them reaches `minc`. Returns the tree
/// and, for each of its items, the item's id in `tree`.
fn conditional(
    tree: &Tree,
    x: usize,
    minc: u64,
    s: &mut Scratch,
) -> Result<Option<(Tree, Vec<u32>)>, Stop> {
    s.cnt.clear();
    s.cnt.resize(x, 0);
    s.paths.clear();
    for nd in tree.nodes_of(x) {
        let w = tree.count[nd];
        let mut p = tree.node[nd].1 as usize;
        if p == 0 {
            continue;
        }
        while p != 0 {
            let (it, up) = tree.node[p];
            s.cnt[it as usize] += w;
            s.paths.flat.push(it);
            p = up as usize;
        }
        s.paths.starts.push(s.paths.flat.len());
        s.paths.weights.push(w);
    }
    let mut kept: Vec<u32> = (0..x as u32)
        .filter(|&y| s.cnt[y as usize] >= minc)
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    kept.sort_unstable_by(|&a, &b| s.cnt[b as usize].cmp(&s.cnt[a as usize]).then(a.cmp(&b)));
    s.new_id.clear();
    s.new_id.resize(x, u32::MAX);
    for (j, &y) in kept.iter().enumerate() {
        s.new_id[y as usize] = j as u32;
    }
    s.txs.clear();
    for i in 0..s.paths.len() {
        let start = s.txs.flat.len();
        for &it in s.paths.tx(i) {
            let r = s.new_id[it as usize];
            if r != u32::MAX {
                s.txs.flat.push(r);
            }
        }
        if s.txs.flat.len() > start {
            s.txs.flat[start..].sort_unstable();
            s.txs.starts.push(s.txs.flat.len());
            s.txs.weights.push(s.paths.weights[i]);
        }
    }
    let mut tb = TreeBuilder::new(kept.len(), s.txs.flat.len() / 2);
    for i in 0..s.txs.len() {
        tb.insert(s.txs.tx(i), s.txs.weights[i])?;
    }
    let ct = tb.finish();
    Ok(Some((ct, kept)))
}

fn binom_sat(m: u64, s: u64) -> u64 {
    if s > m {
        return 0;
    }
    let s = s.min(m - s);
    let mut r: u128 = 1;
    for i in 1..=s {
        r = r * u128::from(m - s + i) / u128::from(i);
        if r > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    r as u64
}

/// Emits every combination of `min_size..=max_size` nodes of a single-path tree: the support
/// of a combination is the count of its deepest node.
fn enumerate_path(
    tree: &Tree,
    to_top: &[u32],
    prefix: &mut Vec<u32>,
    min_size: usize,
    max_size: usize,
    ctx: &Ctx<'_>,
    out: &mut Out,
) -> Result<(), Stop> {
    let m = tree.node.len() - 1;
    let hi = max_size.min(m);
    if hi < min_size {
        return Ok(());
    }
    let total = (min_size..=hi).fold(0u64, |acc, s| {
        acc.saturating_add(binom_sat(m as u64, s as u64))
    });
    ctx.reserve(total)?;
    let base = prefix.len();
    let mut idx = vec![0usize; hi];
    let mut emitted: u64 = 0;
    for s in min_size..=hi {
        for (i, v) in idx.iter_mut().enumerate().take(s) {
            *v = i;
        }
        loop {
            prefix.truncate(base);
            prefix.extend(
                idx[..s - 1]
                    .iter()
                    .map(|&i| to_top[tree.node[i + 1].0 as usize]),
            );
            let last = idx[s - 1] + 1;
            out.push(prefix, to_top[tree.node[last].0 as usize], tree.count[last]);
            emitted += 1;
            if emitted.is_multiple_of(4096) {
                ctx.check()?;
            }
            let mut i = s;
            while i > 0 && idx[i - 1] == m - s + i - 1 {
                i -= 1;
            }
            if i == 0 {
                break;
            }
            idx[i - 1] += 1;
            for j in i..s {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    prefix.truncate(base);
    Ok(())
}

/// FP-growth on a conditional tree whose itemsets extend `prefix` (top-level ranks).
fn grow(
    tree: &Tree,
    to_top: &[u32],
    prefix: &mut Vec<u32>,
    ctx: &Ctx<'_>,
    out: &mut Out,
    scratch: &mut Scratch,
) -> Result<(), Stop> {
    ctx.check()?;
    let room = ctx.max_len - prefix.len();
    if tree.single_path {
        return enumerate_path(tree, to_top, prefix, 1, room, ctx, out);
    }
    let k = tree.item_count.len();
    ctx.reserve(k as u64)?;
    for (&top, &count) in to_top.iter().zip(&tree.item_count) {
        out.push(prefix, top, count);
    }
    if room > 1 {
        for x in 1..k {
            if let Some((ct, kept)) = conditional(tree, x, ctx.min_count_multi, scratch)? {
                let ct_to_top: Vec<u32> = kept.iter().map(|&y| to_top[y as usize]).collect();
                prefix.push(to_top[x]);
                grow(&ct, &ct_to_top, prefix, ctx, out, scratch)?;
                prefix.pop();
            }
        }
    }
    Ok(())
}

const BASKET_CHUNK: usize = 1 << 14;

fn count_items<K: ItemKey>(baskets: &Baskets<K>, shared: &Shared) -> Result<Vec<u64>, Stop> {
    let m = baskets.n_items();
    let items = baskets.flat_items();
    let chunk = (items.len() / 64).max(1 << 16);
    let counts = items
        .par_chunks(chunk)
        .fold(
            || vec![0u64; m],
            |mut acc, c| {
                if !shared.cancelled() {
                    for &i in c {
                        acc[i as usize] += 1;
                    }
                }
                acc
            },
        )
        .reduce_with(|mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
            a
        })
        .unwrap_or_else(|| vec![0u64; m]);
    if shared.cancelled() {
        Err(Stop::Cancelled)
    } else {
        Ok(counts)
    }
}

fn mine_job<K: ItemKey>(
    baskets: &Baskets<K>,
    min_support: f64,
    opts: &MineOptions,
    shared: &Shared,
) -> Result<Vec<Itemset<K>>, Stop> {
    let n = baskets.n_baskets();
    let keys = baskets.keys();
    shared.set_phase(Phase::CountingItems, baskets.n_entries());
    let counts = count_items(baskets, shared)?;
    let d = min_count(min_support, n);
    let ceil_count = {
        let c = (min_support * n as f64).ceil();
        if c >= u64::MAX as f64 {
            u64::MAX
        } else {
            c as u64
        }
    };
    let ctx = Ctx {
        max_len: opts.max_len,
        max_itemsets: opts.max_itemsets as u64,
        min_count_multi: d.max(ceil_count),
        shared,
        limit_hit: AtomicBool::new(false),
    };

    // Frequent items, ranked by count descending (ties by id): rank 0 is the most frequent.
    let mut freq: Vec<u32> = (0..counts.len() as u32)
        .filter(|&i| counts[i as usize] >= d)
        .collect();
    freq.sort_unstable_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    let k = freq.len();
    let mut outs: Vec<Out> = Vec::new();
    let mut singles = Out::default();
    ctx.reserve(k as u64)?;
    for (r, &id) in freq.iter().enumerate() {
        singles.push(&[], r as u32, counts[id as usize]);
    }
    outs.push(singles);

    if opts.max_len > 1 && k > 1 {
        let mut rank_of = vec![u32::MAX; counts.len()];
        for (r, &id) in freq.iter().enumerate() {
            rank_of[id as usize] = r as u32;
        }
        drop(counts);
        let tree = top_tree(baskets, &rank_of, k, shared)?;
        drop(rank_of);

        shared.set_phase(Phase::Mining, k as u64);
        let identity: Vec<u32> = (0..k as u32).collect();
        if tree.single_path {
            let mut out = Out::default();
            enumerate_path(
                &tree,
                &identity,
                &mut Vec::new(),
                2,
                opts.max_len,
                &ctx,
                &mut out,
            )?;
            outs.push(out);
        } else {
            let grown: Vec<Out> = (1..k)
                .into_par_iter()
                .map_init(Scratch::default, |scratch, x| {
                    let mut out = Out::default();
                    let res =
                        conditional(&tree, x, ctx.min_count_multi, scratch).and_then(|c| match c {
                            Some((ct, kept)) => {
                                grow(&ct, &kept, &mut vec![x as u32], &ctx, &mut out, scratch)
                            }
                            None => Ok(()),
                        });
                    shared.done.fetch_add(1, AtOrd::Relaxed);
                    res.map(|()| out)
                })
                .collect::<Result<Vec<Out>, Stop>>()?;
            outs.extend(grown);
        }
    }
    ctx.check()?;
    shared.set_phase(Phase::Finishing, 0);
    Ok(finish(keys, &freq, outs))
}

/// Ranges of consecutive transactions of the given lengths in a flat array.
fn tx_ranges(lens: &[u32]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0usize;
    lens.iter().map(move |&l| {
        let t = start..start + l as usize;
        start += l as usize;
        t
    })
}

/// Builds the top-level FP-tree: each basket reduced to its frequent items as ranks.
///
/// Baskets are reduced in parallel; the tree is then built in parallel by groups of first
/// items (transactions with different first items share no node but the root) and joined.
fn top_tree<K: ItemKey>(
    baskets: &Baskets<K>,
    rank_of: &[u32],
    k: usize,
    shared: &Shared,
) -> Result<Tree, Stop> {
    let nb = baskets.n_baskets() as usize;
    let items = baskets.flat_items();
    let offs = baskets.offsets();
    shared.set_phase(Phase::BuildingTree, 2 * nb as u64);
    // (ranks of all non-empty reduced baskets, their lengths), per chunk of baskets
    let chunks: Vec<(Vec<u32>, Vec<u32>)> = (0..nb.div_ceil(BASKET_CHUNK))
        .into_par_iter()
        .map(|c| {
            let lo = c * BASKET_CHUNK;
            let hi = nb.min(lo + BASKET_CHUNK);
            let mut flat = Vec::new();
            let mut lens = Vec::new();
            if shared.cancelled() {
                return (flat, lens);
            }
            for b in lo..hi {
                let start = flat.len();
                flat.extend(
                    items[offs[b] as usize..offs[b + 1] as usize]
                        .iter()
                        .map(|&id| rank_of[id as usize])
                        .filter(|&r| r != u32::MAX),
                );
                if flat.len() > start {
                    flat[start..].sort_unstable();
                    lens.push((flat.len() - start) as u32);
                }
            }
            shared.done.fetch_add((hi - lo) as u64, AtOrd::Relaxed);
            (flat, lens)
        })
        .collect();
    if shared.cancelled() {
        return Err(Stop::Cancelled);
    }
    // Contiguous groups of first items with similar numbers of entries.
    let mut first_entries = vec![0u64; k];
    for c in &chunks {
        for t in tx_ranges(&c.1) {
            first_entries[c.0[t.start] as usize] += t.len() as u64;
        }
    }
    let total: u64 = first_entries.iter().sum();
    let target = total / (4 * rayon::current_num_threads() as u64).max(1) + 1;
    let mut group_of = vec![0u32; k];
    let mut group_entries = vec![0u64];
    for (r, &e) in first_entries.iter().enumerate() {
        if *group_entries.last().unwrap_or(&0) >= target {
            group_entries.push(0);
        }
        group_of[r] = group_entries.len() as u32 - 1;
        if let Some(g) = group_entries.last_mut() {
            *g += e;
        }
    }
    let per_group = nb as u64 / group_entries.len() as u64;
    let parts = (0..group_entries.len())
        .into_par_iter()
        .map(|g| {
            // a node per entry at most; shared prefixes make it fewer
            let mut tb = TreeBuilder::new(k, (group_entries[g] / 2) as usize);
            for c in &chunks {
                if shared.cancelled() {
                    return Err(Stop::Cancelled);
                }
                for t in tx_ranges(&c.1) {
                    let tx = &c.0[t];
                    if group_of[tx[0] as usize] == g as u32 {
                        tb.insert(tx, 1)?;
                    }
                }
            }
            shared.done.fetch_add(per_group, AtOrd::Relaxed);
            Ok(tb)
        })
        .collect::<Result<Vec<TreeBuilder>, Stop>>()?;
    drop(chunks);
    TreeBuilder::join(parts, k)
}

/// Converts the rank-based results into sorted itemsets of keys, in canonical order.
fn finish<K: ItemKey>(keys: &[K], freq: &[u32], mut outs: Vec<Out>) -> Vec<Itemset<K>> {
    // Position of each rank in key order, so that sorting positions sorts keys.
    let mut by_key: Vec<u32> = (0..freq.len() as u32).collect();
    by_key.par_sort_unstable_by(|&a, &b| {
        keys[freq[a as usize] as usize].cmp(&keys[freq[b as usize] as usize])
    });
    let mut key_pos = vec![0u32; freq.len()];
    for (p, &r) in by_key.iter().enumerate() {
        key_pos[r as usize] = p as u32;
    }
    outs.par_iter_mut().for_each(|o| {
        let mut start = 0usize;
        for &len in &o.lens {
            let s = &mut o.items[start..start + len as usize];
            for v in s.iter_mut() {
                *v = key_pos[*v as usize];
            }
            s.sort_unstable();
            start += len as usize;
        }
    });
    // (out, start, len, count)
    let mut recs: Vec<(u32, usize, u32, u64)> =
        Vec::with_capacity(outs.iter().map(|o| o.lens.len()).sum());
    for (oi, o) in outs.iter().enumerate() {
        let mut start = 0usize;
        for (&len, &count) in o.lens.iter().zip(&o.counts) {
            recs.push((oi as u32, start, len, count));
            start += len as usize;
        }
    }
    let slice = |r: &(u32, usize, u32, u64)| &outs[r.0 as usize].items[r.1..r.1 + r.2 as usize];
    recs.par_sort_unstable_by(|a, b| {
        a.2.cmp(&b.2)
            .then(b.3.cmp(&a.3))
            .then_with(|| slice(a).cmp(slice(b)))
    });
    recs.par_iter()
        .map(|r| Itemset {
            items: slice(r)
                .iter()
                .map(|&p| keys[freq[by_key[p as usize] as usize] as usize].clone())
                .collect(),
            count: r.3,
        })
        .collect()
}
