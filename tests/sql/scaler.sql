-- Feature standardization: xsell.scaler_fit, xsell.scale, xsell.unscale, type xsell.scaler.
-- scikit-learn StandardScaler semantics: population standard deviation, constant features
-- get scale 1, missing values ignored per feature.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
DROP SCHEMA IF EXISTS scaler_test CASCADE;
CREATE SCHEMA scaler_test;
SET search_path = scaler_test, public;
RESET client_min_messages;
SET extra_float_digits = 0;

CREATE TABLE customer_features (customer_id int PRIMARY KEY, features float8[]);
INSERT INTO customer_features VALUES
  (1, '{120.0, 3, 14}'),
  (2, '{80.5, 1, 200}'),
  (3, '{310.0, 9, 2}'),
  (4, '{55.0, NULL, 45}'),   -- a NULL element is ignored for that feature
  (5, NULL),                 -- a NULL row is skipped
  (6, '{99.0, 2, 30}');

-- The fitted scaler is a value: readable JSON text, castable to jsonb.
SELECT xsell.scaler_fit(features) FROM customer_features;
SELECT jsonb_pretty(xsell.scaler_fit(features)::jsonb) FROM customer_features;
SELECT * FROM xsell.scaler_features((SELECT xsell.scaler_fit(features) FROM customer_features));

-- Store it in a table, then standardize and invert.
CREATE TABLE models AS SELECT 'rfm'::text AS name, xsell.scaler_fit(features) AS scaler FROM customer_features;
SELECT c.customer_id, xsell.scale(c.features, m.scaler) AS z
FROM customer_features c, models m ORDER BY c.customer_id;
SELECT c.customer_id, xsell.unscale(xsell.scale(c.features, m.scaler), m.scaler) = c.features AS round_trips
FROM customer_features c, models m WHERE c.features IS NOT NULL ORDER BY c.customer_id;

-- A constant feature gets scale 1 (no division by zero), as in scikit-learn.
SELECT xsell.scaler_fit(f)::jsonb -> 'scale' AS scale
FROM (VALUES ('{1,5}'::float8[]), ('{2,5}'), ('{3,5}')) v(f);

-- NaN elements are ignored like NULL; zero rows give NULL.
SELECT xsell.scaler_fit(f)::jsonb -> 'count' AS count
FROM (VALUES ('{1,NaN}'::float8[]), ('{2,4}'), ('{3,6}')) v(f);
SELECT xsell.scaler_fit(features) IS NULL AS no_rows FROM customer_features WHERE false;

-- The text form round-trips exactly (pg_dump / restore uses it).
SELECT scaler::text::xsell.scaler::text = scaler::text AS text_round_trip FROM models;

-- Bad input: clear errors with SQLSTATEs, never a crash.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT xsell.scaler_fit(f) FROM (VALUES ('{1,2,3}'::float8[]), ('{1,2}')) v(f);
SELECT xsell.scaler_fit(f) FROM (VALUES ('{}'::float8[])) v(f);
SELECT xsell.scaler_fit(f) FROM (VALUES ('{1,Infinity}'::float8[])) v(f);
SELECT xsell.scaler_fit(f) FROM (VALUES ('{{1,2},{3,4}}'::float8[])) v(f);
SELECT xsell.scale('{1,2}', scaler) FROM models;
SELECT '{"n":2,"mean":[1.0],"scale":[0.0],"var":[0.0],"count":[2]}'::xsell.scaler;
SELECT '{"n":1,"mean":[1.0],"scale":[1.0],"var":[0.0],"count":[2]}'::xsell.scaler;
SELECT 'not json'::xsell.scaler;
\set VERBOSITY terse
DO $$ BEGIN PERFORM xsell.scaler_fit(f) FROM (VALUES ('{1,2,3}'::float8[]), ('{1,2}')) v(f);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
DO $$ BEGIN PERFORM xsell.scaler_fit(f) FROM (VALUES ('{1,Infinity}'::float8[])) v(f);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
DO $$ BEGIN PERFORM 'not json'::xsell.scaler;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
\set VERBOSITY default

-- Agreement with scikit-learn (fixture made by scripts/fixtures/gen_scaler_fixture.py).
\set fixture `cat tests/fixtures/scaler_sklearn.json`
CREATE TEMP TABLE fx AS SELECT :'fixture'::jsonb AS j;
CREATE TEMP TABLE fx_rows AS
SELECT ord, ARRAY(SELECT (e #>> '{}')::float8 FROM jsonb_array_elements(r) e) AS f
FROM fx, jsonb_array_elements(j -> 'rows') WITH ORDINALITY AS t(r, ord);
WITH fit AS (SELECT xsell.scaler_fit(f)::jsonb AS s FROM fx_rows),
     cmp AS (
       SELECT k, i, (fit.s -> k ->> i)::float8 AS ours, (fx.j -> ref ->> i)::float8 AS sklearn
       FROM fit, fx, (VALUES ('mean', 'mean'), ('var', 'var'), ('scale', 'scale'), ('count', 'n_samples_seen')) m(k, ref),
            generate_series(0, 4) i)
SELECT k AS field, max(abs(ours - sklearn)) < 1e-9 AS matches_sklearn_1e9 FROM cmp GROUP BY k ORDER BY k;
WITH s AS (SELECT xsell.scaler_fit(f) AS s FROM fx_rows)
SELECT r.ord, bool_and(abs(z.v - (fx.j -> 'transform_first5' -> (r.ord::int - 1) ->> (z.i::int - 1))::float8) < 1e-9) AS transform_matches
FROM s, fx, fx_rows r, unnest(xsell.scale(r.f, s.s)) WITH ORDINALITY z(v, i)
WHERE r.ord <= 5 AND z.v IS NOT NULL GROUP BY r.ord ORDER BY r.ord;

-- Parallel aggregation gives the serial result (relative difference <= 1e-12).
CREATE TABLE wide AS
SELECT g AS id, ARRAY[sin(g) * 100 + 50, (g % 97)::float8, sqrt(g), cos(g * 0.3) * 7, ln(g + 1)] AS f
FROM generate_series(1, 200000) g;
ANALYZE wide;
SET max_parallel_workers_per_gather = 0;
SELECT xsell.scaler_fit(f)::text AS serial_fit FROM wide \gset
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2; SET force_parallel_mode = on;
EXPLAIN (COSTS OFF) SELECT xsell.scaler_fit(f) FROM wide;
SELECT xsell.scaler_fit(f)::text AS parallel_fit FROM wide \gset
SELECT k AS field,
       max(abs((:'parallel_fit'::jsonb -> k ->> i)::float8 - (:'serial_fit'::jsonb -> k ->> i)::float8)
           / greatest(abs((:'serial_fit'::jsonb -> k ->> i)::float8), 1e-300)) <= 1e-12 AS parallel_equals_serial
FROM unnest(ARRAY['mean', 'var', 'scale', 'count']) k, generate_series(0, 4) i
GROUP BY k ORDER BY k;
RESET ALL;
SET client_min_messages = warning;
DROP SCHEMA scaler_test CASCADE;
