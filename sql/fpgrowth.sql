-- Hand-written SQL of pg_xsell, included in the extension script by src/fpgrowth/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

CREATE AGGREGATE xsell.frequent_itemsets(items text[], min_support float8) (
    sfunc = xsell.frequent_itemsets_trans, stype = internal,
    finalfunc = xsell.frequent_itemsets_final, combinefunc = xsell.frequent_itemsets_combine,
    serialfunc = xsell.frequent_itemsets_serial, deserialfunc = xsell.frequent_itemsets_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.frequent_itemsets(items text[], min_support float8, options jsonb) (
    sfunc = xsell.frequent_itemsets_trans, stype = internal,
    finalfunc = xsell.frequent_itemsets_final, combinefunc = xsell.frequent_itemsets_combine,
    serialfunc = xsell.frequent_itemsets_serial, deserialfunc = xsell.frequent_itemsets_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.frequent_itemsets(items bigint[], min_support float8) (
    sfunc = xsell.frequent_itemsets_trans, stype = internal,
    finalfunc = xsell.frequent_itemsets_final, combinefunc = xsell.frequent_itemsets_combine,
    serialfunc = xsell.frequent_itemsets_serial, deserialfunc = xsell.frequent_itemsets_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.frequent_itemsets(items bigint[], min_support float8, options jsonb) (
    sfunc = xsell.frequent_itemsets_trans, stype = internal,
    finalfunc = xsell.frequent_itemsets_final, combinefunc = xsell.frequent_itemsets_combine,
    serialfunc = xsell.frequent_itemsets_serial, deserialfunc = xsell.frequent_itemsets_deserial,
    parallel = safe);

CREATE CAST (xsell.itemsets AS jsonb) WITH INOUT AS ASSIGNMENT;

COMMENT ON FUNCTION xsell.itemsets_in(cstring) IS 'Input function of the type xsell.itemsets: parses and validates its JSON text form.';
COMMENT ON FUNCTION xsell.itemsets_out(xsell.itemsets) IS 'Output function of the type xsell.itemsets: its JSON text form.';
COMMENT ON TYPE xsell.itemsets IS
  'Frequent itemsets mined by xsell.frequent_itemsets: JSON with n_baskets, min_support, max_len and itemsets [{items, count}]. Cast to jsonb to read it; feed it to xsell.rules / xsell.recommend.';
COMMENT ON AGGREGATE xsell.frequent_itemsets(text[], float8) IS
  'FP-growth over baskets (one row = one basket; duplicates count once, NULL items ignored, empty baskets count). Keeps itemsets with support >= min_support (mlxtend semantics), up to 4 items. Parallel safe; works per GROUP BY group.';
COMMENT ON AGGREGATE xsell.frequent_itemsets(text[], float8, jsonb) IS
  'FP-growth over baskets with options {"max_len": 4, "max_itemsets": 1000000}; exceeding max_itemsets is a 54000 error.';
COMMENT ON AGGREGATE xsell.frequent_itemsets(bigint[], float8) IS
  'FP-growth over baskets of product ids (bigint); items appear as text in the result.';
COMMENT ON AGGREGATE xsell.frequent_itemsets(bigint[], float8, jsonb) IS
  'FP-growth over baskets of product ids (bigint) with options {"max_len", "max_itemsets"}.';
COMMENT ON FUNCTION xsell.itemset_table(xsell.itemsets) IS
  'The frequent itemsets of a model as rows: items (sorted), count (baskets), support (count / baskets).';
COMMENT ON FUNCTION xsell.rules(xsell.itemsets, float8, float8) IS
  'Association rules A -> C from a model with mlxtend association_rules metrics (support, confidence, lift, leverage, conviction = Infinity at confidence 1), filtered by min_confidence and min_lift, ordered by lift desc, confidence desc.';
COMMENT ON FUNCTION xsell.recommend(text[], xsell.itemsets, integer, float8) IS
  'Cart recommendations: items not in the cart ranked by the best rule A -> {item} with A contained in the cart; score = that rule''s confidence, because = A.';
COMMENT ON FUNCTION xsell.frequent_itemsets_trans(internal, text[], float8) IS 'Support function of the aggregate xsell.frequent_itemsets (transition).';
COMMENT ON FUNCTION xsell.frequent_itemsets_trans(internal, text[], float8, jsonb) IS 'Support function of the aggregate xsell.frequent_itemsets (transition).';
COMMENT ON FUNCTION xsell.frequent_itemsets_trans(internal, bigint[], float8) IS 'Support function of the aggregate xsell.frequent_itemsets (transition).';
COMMENT ON FUNCTION xsell.frequent_itemsets_trans(internal, bigint[], float8, jsonb) IS 'Support function of the aggregate xsell.frequent_itemsets (transition).';
COMMENT ON FUNCTION xsell.frequent_itemsets_combine(internal, internal) IS 'Support function of the aggregate xsell.frequent_itemsets (parallel combine).';
COMMENT ON FUNCTION xsell.frequent_itemsets_serial(internal) IS 'Support function of the aggregate xsell.frequent_itemsets (serialize).';
COMMENT ON FUNCTION xsell.frequent_itemsets_deserial(bytea, internal) IS 'Support function of the aggregate xsell.frequent_itemsets (deserialize).';
COMMENT ON FUNCTION xsell.frequent_itemsets_final(internal) IS 'Support function of the aggregate xsell.frequent_itemsets (final: mines the itemsets).';
