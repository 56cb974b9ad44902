//! SQL layer of cross-sell rules: `xsell.frequent_itemsets` (FP-growth), `xsell.itemset_table`,
//! `xsell.rules`, `xsell.recommend` and the type `xsell.itemsets`. The mining lives in the
//! pure crate `xsell-fpgrowth`.

use crate::common::partial::{self, Partial};
use crate::common::{Code, LazyJsonb, Options, agg_state, check_interrupts, pool, progress, raise};
use pgrx::prelude::*;
use pgrx::{InOutFuncs, Internal, StringInfo};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::time::{Duration, Instant};
use xsell_fpgrowth::{Baskets, FpError, MineOptions};

/// Mined frequent itemsets (`xsell.itemsets`). Text form: JSON
/// `{"n_baskets":N,"min_support":s,"max_len":L,"itemsets":[{"items":[..],"count":c},..]}`.
#[derive(PostgresType, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[inoutfuncs]
pub struct Itemsets(pub xsell_fpgrowth::Itemsets<String>);

impl InOutFuncs for Itemsets {
    fn input(input: &CStr) -> Self {
        let text = input.to_str().unwrap_or_else(|_| {
            raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, "xsell.itemsets input is not valid UTF-8")
        });
        match xsell_fpgrowth::Itemsets::<String>::from_json(text) {
            Ok(m) => Itemsets(m),
            Err(e) => raise(Code::ERRCODE_INVALID_TEXT_REPRESENTATION, format!("invalid xsell.itemsets: {}", e.message())),
        }
    }

    fn output(&self, buffer: &mut StringInfo) {
        buffer.push_str(&self.0.to_json());
    }
}

fn fp_error(e: FpError) -> ! {
    let code = match &e {
        FpError::InvalidParameter(_) => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        FpError::LimitExceeded(_) => Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        FpError::InvalidModel(_) => Code::ERRCODE_DATA_EXCEPTION,
        FpError::CorruptData(_) => Code::ERRCODE_INVALID_BINARY_REPRESENTATION,
    };
    raise(code, e.message().to_string())
}

/// The aggregate's state: the baskets plus the parameters, which travel with partial states
/// because the leader of a parallel plan may see no row itself.
#[derive(Default)]
struct FpState {
    baskets: Baskets<String>,
    min_support: Option<f64>,
    opts: Option<MineOptions>,
}

impl FpState {
    fn set_params(&mut self, min_support: Option<f64>, options: Option<&LazyJsonb>) {
        let Some(ms) = min_support else {
            raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "min_support must not be NULL");
        };
        match self.min_support {
            None => {
                if ms.is_nan() || ms <= 0.0 || ms > 1.0 {
                    raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("min_support must be in (0, 1], got {ms}"));
                }
                self.min_support = Some(ms);
            }
            Some(prev) if prev.to_bits() != ms.to_bits() => raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "min_support must be the same for every row of a group",
            ),
            _ => {}
        }
        if self.opts.is_none() {
            self.opts = Some(match options {
                None => MineOptions::default(),
                Some(raw) => parse_options(raw),
            });
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let opts = self.opts.unwrap_or_default();
        let mut out = Vec::new();
        out.extend_from_slice(&self.min_support.unwrap_or(f64::NAN).to_le_bytes());
        out.extend_from_slice(&(opts.max_len as u64).to_le_bytes());
        out.extend_from_slice(&(opts.max_itemsets as u64).to_le_bytes());
        out.push(self.opts.is_some() as u8);
        out.extend_from_slice(&self.baskets.to_bytes());
        out
    }

    fn from_bytes(b: &[u8]) -> FpState {
        let corrupt = || raise(Code::ERRCODE_INVALID_BINARY_REPRESENTATION, "corrupt frequent_itemsets partial state");
        if b.len() < 25 {
            corrupt();
        }
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let ms = f64::from_bits(word(0));
        let opts = MineOptions { max_len: word(1) as usize, max_itemsets: word(2) as usize };
        let baskets = Baskets::from_bytes(&b[25..]).unwrap_or_else(|e| fp_error(e));
        FpState {
            baskets,
            min_support: (!ms.is_nan()).then_some(ms),
            opts: (b[24] == 1).then_some(opts),
        }
    }
}

fn parse_options(raw: &LazyJsonb) -> MineOptions {
    let map = raw.parse("frequent_itemsets options");
    let mut o = Options::new(&map, "frequent_itemsets");
    let d = MineOptions::default();
    let opts = MineOptions {
        max_len: o.int("max_len", d.max_len as i64, 1, 64) as usize,
        max_itemsets: o.int("max_itemsets", d.max_itemsets as i64, 1, i64::MAX) as usize,
    };
    o.finish();
    opts
}

fn add_text(st: &mut FpState, items: Option<Array<'_, &str>>) {
    if let Some(items) = items {
        st.baskets.add_borrowed(items.iter().flatten()).unwrap_or_else(|e| fp_error(e));
    }
}

fn add_bigint(st: &mut FpState, items: Option<Array<'_, i64>>) {
    if let Some(items) = items {
        st.baskets.add(items.iter().flatten().map(|i| i.to_string())).unwrap_or_else(|e| fp_error(e));
    }
}

/// Transition function of `xsell.frequent_itemsets(text[], float8)`.
#[pg_extern(immutable, parallel_safe, name = "frequent_itemsets_trans")]
fn fi_trans_text(state: Internal, items: Option<Array<'_, &str>>, min_support: Option<f64>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, FpState::default) };
    st.set_params(min_support, None);
    add_text(st, items);
    state
}

/// Transition function of `xsell.frequent_itemsets(text[], float8, jsonb)`.
#[pg_extern(immutable, parallel_safe, name = "frequent_itemsets_trans")]
fn fi_trans_text_opts(
    state: Internal,
    items: Option<Array<'_, &str>>,
    min_support: Option<f64>,
    options: Option<LazyJsonb>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, FpState::default) };
    st.set_params(min_support, options.as_ref());
    add_text(st, items);
    state
}

/// Transition function of `xsell.frequent_itemsets(bigint[], float8)`.
#[pg_extern(immutable, parallel_safe, name = "frequent_itemsets_trans")]
fn fi_trans_bigint(state: Internal, items: Option<Array<'_, i64>>, min_support: Option<f64>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, FpState::default) };
    st.set_params(min_support, None);
    add_bigint(st, items);
    state
}

/// Transition function of `xsell.frequent_itemsets(bigint[], float8, jsonb)`.
#[pg_extern(immutable, parallel_safe, name = "frequent_itemsets_trans")]
fn fi_trans_bigint_opts(
    state: Internal,
    items: Option<Array<'_, i64>>,
    min_support: Option<f64>,
    options: Option<LazyJsonb>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let mut state = state;
    let st = unsafe { agg_state(&mut state, fcinfo, FpState::default) };
    st.set_params(min_support, options.as_ref());
    add_bigint(st, items);
    state
}

impl Partial for FpState {
    fn merge_from(&mut self, other: Self) {
        if self.min_support.is_none() {
            self.min_support = other.min_support;
        }
        if self.opts.is_none() {
            self.opts = other.opts;
        }
        self.baskets.merge(other.baskets).unwrap_or_else(|e| fp_error(e));
    }

    fn to_bytes(&mut self) -> Vec<u8> {
        FpState::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        FpState::from_bytes(bytes)
    }
}

/// Combine function of `xsell.frequent_itemsets`.
#[pg_extern(immutable, parallel_safe)]
fn frequent_itemsets_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    partial::combine::<FpState>(a, b, fcinfo)
}

/// Serialization function of `xsell.frequent_itemsets`.
#[pg_extern(immutable, parallel_safe, strict)]
fn frequent_itemsets_serial(state: Internal) -> Vec<u8> {
    partial::serial::<FpState>(state)
}

/// Deserialization function of `xsell.frequent_itemsets`.
#[pg_extern(immutable, parallel_safe, strict)]
fn frequent_itemsets_deserial(bytes: &[u8], _unused: Internal) -> Internal {
    partial::deserial::<FpState>(bytes)
}

/// Calls `check_for_interrupts` on every progress report and logs a NOTICE about once a second.
fn reporter(what: &'static str) -> impl FnMut(&xsell_fpgrowth::Progress) {
    let mut last = Instant::now();
    move |p| {
        check_interrupts();
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            progress(|| {
                format!("{what}: {} {}/{} done, {} found, {:.1}s", p.phase.name(), p.done, p.total, p.found, p.elapsed.as_secs_f64())
            });
        }
    }
}

/// Final function of `xsell.frequent_itemsets`: runs FP-growth over the gathered baskets.
#[pg_extern(immutable, parallel_safe)]
fn frequent_itemsets_final(state: Internal) -> Option<Itemsets> {
    let st = unsafe { state.get::<FpState>() }?;
    let min_support = st.min_support?;
    let opts = st.opts.unwrap_or_default();
    progress(|| {
        format!(
            "frequent_itemsets: mining {} baskets over {} items (min_support {min_support}, max_len {})",
            st.baskets.n_baskets(),
            st.baskets.n_items(),
            opts.max_len
        )
    });
    let pool = pool();
    let model = xsell_fpgrowth::mine(&st.baskets, min_support, &opts, &pool, &mut reporter("frequent_itemsets"))
        .unwrap_or_else(|e| fp_error(e));
    progress(|| format!("frequent_itemsets: {} frequent itemsets", model.len()));
    Some(Itemsets(model))
}

/// `xsell.itemset_table(model)`: the itemsets as rows.
#[pg_extern(immutable, parallel_safe, strict)]
fn itemset_table(
    model: Itemsets,
) -> TableIterator<'static, (name!(items, Vec<String>), name!(count, i64), name!(support, f64))> {
    let m = model.0;
    let n = m.n_baskets as f64;
    TableIterator::new(m.itemsets.into_iter().map(move |s| {
        let support = s.count as f64 / n;
        (s.items, s.count as i64, support)
    }))
}

/// Largest number of rules `xsell.rules` returns before asking for stricter thresholds.
const MAX_RULES: usize = 10_000_000;

/// `xsell.rules(model, min_confidence, min_lift)`: association rules with mlxtend's metrics.
#[pg_extern(immutable, parallel_safe, strict)]
fn rules(
    model: Itemsets,
    min_confidence: default!(f64, 0.5),
    min_lift: default!(f64, 0),
) -> TableIterator<
    'static,
    (
        name!(antecedent, Vec<String>),
        name!(consequent, Vec<String>),
        name!(antecedent_support, f64),
        name!(consequent_support, f64),
        name!(support, f64),
        name!(confidence, f64),
        name!(lift, f64),
        name!(leverage, f64),
        name!(conviction, f64),
        name!(count, i64),
    ),
> {
    let rules = xsell_fpgrowth::rules(&model.0, min_confidence, min_lift, MAX_RULES, &mut reporter("rules"))
        .unwrap_or_else(|e| fp_error(e));
    TableIterator::new(rules.into_iter().map(|r| {
        (
            r.antecedent,
            r.consequent,
            r.antecedent_support,
            r.consequent_support,
            r.support,
            r.confidence,
            r.lift,
            r.leverage,
            r.conviction,
            r.count as i64,
        )
    }))
}

/// `xsell.recommend(cart, model, n, min_confidence)`: items to suggest for a cart.
#[pg_extern(immutable, parallel_safe, strict)]
fn recommend(
    cart: Array<'_, &str>,
    model: Itemsets,
    n: default!(i32, 5),
    min_confidence: default!(f64, 0.1),
) -> TableIterator<
    'static,
    (
        name!(item, String),
        name!(score, f64),
        name!(confidence, f64),
        name!(lift, f64),
        name!(because, Vec<String>),
    ),
> {
    if !(1..=10_000).contains(&n) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("n must be between 1 and 10000, got {n}"));
    }
    let cart: Vec<String> = cart.iter().flatten().map(str::to_owned).collect();
    let recs = xsell_fpgrowth::recommend(&cart, &model.0, n as usize, min_confidence).unwrap_or_else(|e| fp_error(e));
    TableIterator::new(recs.into_iter().map(|r| (r.item, r.score, r.confidence, r.lift, r.because)))
}

extension_sql_file!(
    "../../sql/fpgrowth.sql",
    name = "frequent_itemsets_aggregate",
    requires = [
        Itemsets,
        fi_trans_text,
        fi_trans_text_opts,
        fi_trans_bigint,
        fi_trans_bigint_opts,
        frequent_itemsets_combine,
        frequent_itemsets_serial,
        frequent_itemsets_deserial,
        frequent_itemsets_final,
        itemset_table,
        rules,
        recommend
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn planted_rule_is_found() {
        let lift = Spi::get_one::<f64>(
            "SELECT lift FROM xsell.rules((SELECT xsell.frequent_itemsets(b, 0.2) FROM (VALUES
               (ARRAY['tent','headlamp']), (ARRAY['tent','headlamp','stove']), (ARRAY['tent','headlamp']),
               (ARRAY['book']), (ARRAY['book','tent']), (ARRAY[]::text[])) v(b)), 0.5)
             WHERE antecedent = ARRAY['headlamp'] AND consequent = ARRAY['tent']",
        )
        .unwrap()
        .unwrap();
        // P(tent | headlamp) = 1, P(tent) = 4/6
        assert!((lift - 1.5).abs() < 1e-12, "{lift}");
    }

    #[pg_test(error = "min_support must be in (0, 1], got 1.5")]
    fn min_support_is_checked() {
        Spi::run("SELECT xsell.frequent_itemsets(ARRAY['a'], 1.5)").unwrap();
    }

    #[pg_test]
    fn bigint_baskets_and_recommend() {
        let item = Spi::get_one::<String>(
            "SELECT item FROM xsell.recommend(ARRAY['7'], (SELECT xsell.frequent_itemsets(b, 0.1) FROM (VALUES
               (ARRAY[7,8]::bigint[]), (ARRAY[7,8,9]::bigint[]), (ARRAY[9]::bigint[])) v(b)), 1)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(item, "8");
    }
}
