-- Cross-sell rules: FP-growth frequent itemsets, association rules (mlxtend metrics) and
-- cart recommendations. One row = one basket.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
DROP SCHEMA IF EXISTS fpgrowth_test CASCADE;
CREATE SCHEMA fpgrowth_test;
SET search_path = fpgrowth_test, public;
RESET client_min_messages;
SET extra_float_digits = 0;

CREATE TABLE baskets (basket_id int, segment text, items text[]);
INSERT INTO baskets VALUES
  (1, 'outdoor', '{tent,headlamp,stove}'),
  (2, 'outdoor', '{tent,headlamp}'),
  (3, 'outdoor', '{tent,headlamp,sleeping bag}'),
  (4, 'outdoor', '{tent,sleeping bag}'),
  (5, 'kitchen', '{cookbook,chef knife,sharpener}'),
  (6, 'kitchen', '{cookbook,chef knife}'),
  (7, 'kitchen', '{chef knife,sharpener,sharpener}'),   -- a duplicate counts once
  (8, 'kitchen', '{cookbook,NULL}'),                     -- NULL items are ignored
  (9, 'kitchen', '{}');                                  -- an empty basket still counts

-- The model is a value (JSON text form, cast to jsonb).
SELECT xsell.frequent_itemsets(items, 0.3) FROM baskets;
SELECT * FROM xsell.itemset_table((SELECT xsell.frequent_itemsets(items, 0.2) FROM baskets));

-- Rules "bought A, also buys C" with mlxtend's metrics.
CREATE TABLE models AS SELECT xsell.frequent_itemsets(items, 0.2) AS m FROM baskets;
SELECT antecedent, consequent, round(support::numeric, 4) AS support,
       round(confidence::numeric, 4) AS confidence, round(lift::numeric, 4) AS lift,
       round(leverage::numeric, 4) AS leverage, conviction, count
FROM xsell.rules((SELECT m FROM models), min_confidence => 0.6);

-- Cart recommendations: best rule whose antecedent is inside the cart.
SELECT * FROM xsell.recommend(ARRAY['tent'], (SELECT m FROM models));
SELECT * FROM xsell.recommend(ARRAY['cookbook', 'tent'], (SELECT m FROM models), n => 2);

-- Per segment with GROUP BY.
SELECT segment, r.antecedent, r.consequent, round(r.confidence::numeric, 3) AS confidence
FROM (SELECT segment, xsell.frequent_itemsets(items, 0.5) AS m FROM baskets GROUP BY segment) s,
     xsell.rules(s.m, 0.9) r
ORDER BY segment, r.antecedent, r.consequent;

-- Order-line tables: array_agg the lines of each basket, then mine.
CREATE TABLE order_lines (order_id int, product_id bigint);
INSERT INTO order_lines VALUES (1, 10), (1, 11), (2, 10), (2, 11), (2, 12), (3, 10), (4, 12);
SELECT items, count FROM xsell.itemset_table(
  (SELECT xsell.frequent_itemsets(products, 0.5) FROM
     (SELECT array_agg(product_id) AS products FROM order_lines GROUP BY order_id) o));

-- Options: max_len.
SELECT max(array_length(items, 1)) AS longest FROM xsell.itemset_table(
  (SELECT xsell.frequent_itemsets(items, 0.1, '{"max_len": 2}') FROM baskets));

-- The text form round-trips (pg_dump / restore).
SELECT m::text::xsell.itemsets::text = m::text AS text_round_trip FROM models;
SELECT xsell.frequent_itemsets(items, 0.5) IS NULL AS no_rows FROM baskets WHERE false;

-- Bad input.
\set SHOW_CONTEXT never
SELECT xsell.frequent_itemsets(items, 0) FROM baskets;
SELECT xsell.frequent_itemsets(items, 1.5) FROM baskets;
SELECT xsell.frequent_itemsets(items, 0.1, '{"max_len": 0}') FROM baskets;
SELECT xsell.frequent_itemsets(items, 0.1, '{"maxlen": 2}') FROM baskets;
SELECT xsell.frequent_itemsets(items, 0.01, '{"max_itemsets": 5}') FROM baskets;
SELECT * FROM xsell.recommend(ARRAY['tent'], (SELECT m FROM models), n => 0);
SELECT * FROM xsell.rules((SELECT m FROM models), 1.5);
SELECT '{"n_baskets": 2, "min_support": 0.5, "max_len": 2, "itemsets": [{"items": ["a"], "count": 3}]}'::xsell.itemsets;
SELECT '{"n_baskets": 2}'::xsell.itemsets;
\set VERBOSITY terse
DO $$ BEGIN PERFORM xsell.frequent_itemsets(items, 0.01, '{"max_itemsets": 5}') FROM baskets;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
DO $$ BEGIN PERFORM xsell.frequent_itemsets(items, 0) FROM baskets;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
\set VERBOSITY default

-- Cancel / statement_timeout interrupts mining (dense baskets, tiny min_support, long itemsets).
CREATE TABLE dense AS
SELECT g AS id, ARRAY(SELECT 'i' || (abs(hashint4(g * 31 + j)) % 30) FROM generate_series(1, 20) j) AS items
FROM generate_series(1, 3000) g;
SET statement_timeout = '300ms';
SELECT xsell.frequent_itemsets(items, 0.0005, '{"max_len": 12, "max_itemsets": 100000000}') IS NOT NULL FROM dense;
RESET statement_timeout;

-- Exactness against mlxtend fpgrowth + association_rules (fixture made by
-- scripts/fixtures/gen_fpgrowth_fixture.py: ties, single-item baskets, duplicates, empty
-- baskets, a planted {a,b} -> {c} rule). Every support and rule metric within 1e-12.
\set fixture `cat crates/xsell-fpgrowth/tests/fixtures/fpgrowth_mlxtend.json`
CREATE TEMP TABLE fx AS SELECT :'fixture'::jsonb AS j;
CREATE TEMP TABLE fx_baskets AS
SELECT ARRAY(SELECT jsonb_array_elements_text(b)) AS items FROM fx, jsonb_array_elements(j -> 'baskets') b;
CREATE TEMP TABLE fx_cases AS
SELECT ord AS case_no, c FROM fx, jsonb_array_elements(j -> 'cases') WITH ORDINALITY t(c, ord);
CREATE TEMP TABLE ours AS
SELECT case_no, (SELECT xsell.frequent_itemsets(items, (c ->> 'min_support')::float8,
                   jsonb_build_object('max_len', c -> 'max_len')) FROM fx_baskets) AS m
FROM fx_cases;
-- itemsets: same sets, same supports
SELECT f.case_no,
       (SELECT count(*) FROM xsell.itemset_table(o.m)) AS ours,
       jsonb_array_length(f.c -> 'itemsets') AS mlxtend,
       (SELECT bool_and(coalesce(abs(t.support - (e ->> 'support')::float8) <= 1e-12, false))
          FROM jsonb_array_elements(f.c -> 'itemsets') e
          LEFT JOIN xsell.itemset_table(o.m) t
            ON t.items = ARRAY(SELECT jsonb_array_elements_text(e -> 'items') ORDER BY 1)) AS supports_match
FROM fx_cases f JOIN ours o USING (case_no) ORDER BY f.case_no;
-- rules: same rules, every metric
SELECT f.case_no,
       (SELECT count(*) FROM xsell.rules(o.m, (f.c ->> 'min_confidence')::float8, (f.c ->> 'min_lift')::float8)) AS ours,
       jsonb_array_length(f.c -> 'rules') AS mlxtend,
       (SELECT coalesce(bool_and(coalesce(
                 abs(r.antecedent_support - (e ->> 'antecedent_support')::float8) <= 1e-12
             AND abs(r.consequent_support - (e ->> 'consequent_support')::float8) <= 1e-12
             AND abs(r.support - (e ->> 'support')::float8) <= 1e-12
             AND abs(r.confidence - (e ->> 'confidence')::float8) <= 1e-12
             AND abs(r.lift - (e ->> 'lift')::float8) <= 1e-12
             AND abs(r.leverage - (e ->> 'leverage')::float8) <= 1e-12
             AND (CASE WHEN e -> 'conviction' = 'null' THEN r.conviction = 'Infinity'
                       ELSE abs(r.conviction - (e ->> 'conviction')::float8) <= 1e-12 END), false)), true)
          FROM jsonb_array_elements(f.c -> 'rules') e
          LEFT JOIN xsell.rules(o.m, (f.c ->> 'min_confidence')::float8, (f.c ->> 'min_lift')::float8) r
            ON r.antecedent = ARRAY(SELECT jsonb_array_elements_text(e -> 'antecedent') ORDER BY 1)
           AND r.consequent = ARRAY(SELECT jsonb_array_elements_text(e -> 'consequent') ORDER BY 1)) AS metrics_match
FROM fx_cases f JOIN ours o USING (case_no) ORDER BY f.case_no;

-- A parallel plan gives the serial model.
CREATE TABLE many AS
SELECT g AS id, ARRAY['p' || (g % 7), 'p' || (g % 11), 'p' || (g % 13)] AS items FROM generate_series(1, 60000) g;
ANALYZE many;
SET max_parallel_workers_per_gather = 0;
SELECT xsell.frequent_itemsets(items, 0.01)::text AS serial_model FROM many \gset
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2; SET force_parallel_mode = on;
EXPLAIN (COSTS OFF) SELECT xsell.frequent_itemsets(items, 0.01) FROM many;
SELECT xsell.frequent_itemsets(items, 0.01)::text = :'serial_model' AS parallel_equals_serial FROM many;
RESET ALL;
SET client_min_messages = warning;
DROP SCHEMA fpgrowth_test CASCADE;
