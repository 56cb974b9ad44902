-- K-means segmentation: xsell.kmeans_fit (in memory), xsell.kmeans_train (streaming passes),
-- assignment, quality measures and choosing k.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
DROP SCHEMA IF EXISTS kmeans_test CASCADE;
CREATE SCHEMA kmeans_test;
SET search_path = kmeans_test, public;
RESET client_min_messages;
SET extra_float_digits = 0;

-- Three well separated groups of customers (already standardized features).
CREATE TABLE customers (id int, z float8[]);
INSERT INTO customers
SELECT g, ARRAY[c.x + 0.1 * sin(g), c.y + 0.1 * cos(g * 1.7)]
FROM generate_series(1, 90) g,
     LATERAL (SELECT (ARRAY[-3.0, 0.0, 3.0])[1 + g % 3] AS x, (ARRAY[0.0, 3.0, 0.0])[1 + g % 3] AS y) c;

-- The model is a value: readable JSON, castable to jsonb, stored in a table.
CREATE TABLE models AS SELECT xsell.kmeans_fit(z, 3) AS m FROM customers;
SELECT m::jsonb - 'centroids' AS model FROM models;
SELECT cluster, size, (SELECT array_agg(round(v::numeric, 3)) FROM unnest(centroid) v) AS centroid
FROM models, xsell.kmeans_clusters(m) ORDER BY cluster;
SELECT array_dims(xsell.kmeans_centroids(m)) AS centroid_matrix FROM models;

-- Assign rows (new or old) to segments; distance to the segment's centroid.
SELECT xsell.kmeans_assign(z, m) AS segment, count(*), round(max(xsell.kmeans_distance(z, m))::numeric, 3) AS max_distance
FROM customers, models GROUP BY 1 ORDER BY 1;
SELECT xsell.kmeans_assign('{2.9, 0.2}', m) = xsell.kmeans_assign('{3, 0}', m) AS same_segment FROM models;

-- Quality: silhouette (exact up to sample_size rows, a seeded sample beyond).
SELECT round(xsell.silhouette(z, xsell.kmeans_assign(z, m))::numeric, 4) AS silhouette FROM customers, models;
SELECT round(xsell.silhouette(z, xsell.kmeans_assign(z, m), 30)::numeric, 4) AS silhouette_sampled FROM customers, models;

-- Same data and seed, same model, whatever the row order or plan.
SELECT (SELECT xsell.kmeans_fit(z, 3, '{"seed": 7}')::text FROM (SELECT z FROM customers ORDER BY id DESC) s)
     = (SELECT xsell.kmeans_fit(z, 3, '{"seed": 7}')::text FROM (SELECT z FROM customers ORDER BY md5(id::text)) s)
  AS order_independent;

-- The scalable path streams over a query in passes (k-means|| seeding, then Lloyd passes).
SELECT k, n_rows, sizes, converged, init, round(inertia::numeric, 4) AS inertia
FROM jsonb_to_record((SELECT xsell.kmeans_train('SELECT z FROM kmeans_test.customers', 3)::jsonb))
  AS r(k int, n_rows int, sizes int[], converged bool, init text, inertia float8);
-- One pass of Lloyd, for those who drive training themselves.
SELECT s -> 'n' AS n, s -> 'counts' AS counts, round((s ->> 'inertia')::numeric, 4) AS inertia
FROM (SELECT xsell.kmeans_step(z, '{{-3,0},{0,3},{3,0}}') AS s FROM customers) q;
-- Choosing k.
SELECT k, round(inertia::numeric, 2) AS inertia, round(silhouette::numeric, 3) AS silhouette
FROM xsell.kmeans_sweep('SELECT z FROM kmeans_test.customers', ARRAY[2, 3, 4]);

-- Zero rows give NULL.
SELECT xsell.kmeans_fit(z, 3) IS NULL AS no_rows FROM customers WHERE false;

-- Bad input: clear errors with SQLSTATEs.
\set SHOW_CONTEXT never
SELECT xsell.kmeans_fit(z, 0) FROM customers;
SELECT xsell.kmeans_fit(z, 5) FROM (VALUES ('{1,1}'::float8[]), ('{1,1}'), ('{2,2}')) v(z);
SELECT xsell.kmeans_fit(z, 2) FROM (VALUES ('{1,1}'::float8[]), ('{1,NaN}')) v(z);
SELECT xsell.kmeans_fit(z, 2) FROM (VALUES ('{1,1}'::float8[]), ('{1,2,3}')) v(z);
SELECT xsell.kmeans_fit(z, 2, '{"max_iters": 5}') FROM customers;
SELECT xsell.kmeans_fit(z, 2, '{"init": [[1,2,3],[4,5,6]]}') FROM customers;
SELECT xsell.kmeans_assign('{1,2,3}', m) FROM models;
SELECT '{"k": 2}'::xsell.kmeans_model;
SELECT xsell.kmeans_train('DELETE FROM kmeans_test.customers', 2);
SELECT xsell.kmeans_train('SELECT z FROM kmeans_test.customers; SELECT 1', 2);
SET xsell.max_fit_memory_mb = 1;
SELECT xsell.kmeans_fit(ARRAY[g, g * 2.0], 2) FROM generate_series(1, 70000) g;
RESET xsell.max_fit_memory_mb;
\set VERBOSITY terse
DO $$ BEGIN PERFORM xsell.kmeans_fit(z, 0) FROM kmeans_test.customers;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
DO $$ BEGIN SET LOCAL xsell.max_fit_memory_mb = 1; PERFORM xsell.kmeans_fit(ARRAY[g, g * 2.0], 2) FROM generate_series(1, 70000) g;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
\set VERBOSITY default

-- Cancel / statement_timeout stops long training.
SET statement_timeout = '300ms';
SELECT xsell.kmeans_fit(ARRAY[sin(g), cos(g * 3.1), sin(g * 0.7)], 40, '{"n_init": 10000, "tol": 0}') FROM generate_series(1, 20000) g;
RESET statement_timeout;

-- Agreement with scikit-learn (fixture made by scripts/fixtures/gen_kmeans_fixture.py):
-- explicit initial centroids give sklearn's KMeans(init=..., n_init=1, algorithm='lloyd')
-- result to 1e-9; k-means++ inertia within 0.1 % of sklearn's.
\set fixture `cat crates/xsell-kmeans/tests/fixtures/kmeans_sklearn.json`
CREATE TEMP TABLE fx AS SELECT :'fixture'::jsonb AS j;
CREATE TEMP TABLE fx_rows AS
SELECT ARRAY(SELECT (v #>> '{}')::float8 FROM jsonb_array_elements(r) v) AS z FROM fx, jsonb_array_elements(j -> 'data') r;
WITH cases AS (SELECT c FROM fx, jsonb_array_elements(j -> 'explicit') c),
     fits AS (
       SELECT c ->> 'name' AS name, c,
              (SELECT xsell.kmeans_fit(z, 4, jsonb_build_object('init', c -> 'init', 'tol', c -> 'tol',
                        'max_iter', c -> 'max_iter', 'algorithm', 'lloyd'))::jsonb FROM fx_rows) AS m
       FROM cases)
SELECT name,
       abs((m ->> 'inertia')::float8 - (c ->> 'inertia')::float8) / (c ->> 'inertia')::float8 < 1e-9 AS inertia_matches,
       (m ->> 'iterations')::int = (c ->> 'n_iter')::int AS n_iter_matches,
       (SELECT max(best) FROM (
          SELECT min((SELECT max(abs((a.v #>> '{}')::float8 - (b.v #>> '{}')::float8))
                      FROM jsonb_array_elements(sk) WITH ORDINALITY a(v, i)
                      JOIN jsonb_array_elements(ours) WITH ORDINALITY b(v, i) USING (i))) AS best
          FROM jsonb_array_elements(c -> 'centroids') sk, jsonb_array_elements(m -> 'centroids') ours
          GROUP BY sk) x) < 1e-9 AS centroids_match
FROM fits ORDER BY name;
SELECT (SELECT (xsell.kmeans_fit(z, 4)::jsonb ->> 'inertia')::float8 FROM fx_rows)
       <= 1.001 * (j -> 'kmeanspp' ->> 'inertia')::float8 AS kmeanspp_within_0_1_percent,
       abs((SELECT xsell.silhouette(z, l::int) FROM (SELECT z, row_number() OVER () AS i FROM fx_rows) r
            JOIN (SELECT (v #>> '{}')::int AS l, i FROM jsonb_array_elements(j -> 'silhouette' -> 'labels') WITH ORDINALITY t(v, i)) lab USING (i))
           - (j -> 'silhouette' ->> 'score')::float8) < 1e-9 AS silhouette_matches
FROM fx;

-- A forced parallel plan gives the serial model.
CREATE TABLE many AS SELECT g AS id, ARRAY[sin(g) * 3, cos(g * 0.37) * 2, (g % 17)::float8 / 5] AS z FROM generate_series(1, 50000) g;
ANALYZE many;
SET max_parallel_workers_per_gather = 0;
SELECT xsell.kmeans_fit(z, 5)::text AS serial_model FROM many \gset
SELECT xsell.kmeans_step(z, '{{0,0,0},{2,1,1},{-2,-1,2}}')::text AS serial_step FROM many \gset
-- Left to its costs the planner keeps kmeans_fit in one process below ~10M rows (its partial
-- states are the rows; see sql/kmeans.sql); with function costs ignored it plans workers.
SET parallel_setup_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT xsell.kmeans_fit(z, 5) FROM many;
SET cpu_operator_cost = 0; SET force_parallel_mode = on;
EXPLAIN (COSTS OFF) SELECT xsell.kmeans_fit(z, 5) FROM many;
SELECT xsell.kmeans_fit(z, 5)::text = :'serial_model' AS parallel_equals_serial FROM many;
-- kmeans_step's typed bytea state is combined across workers (no serialize functions needed).
EXPLAIN (COSTS OFF) SELECT xsell.kmeans_step(z, '{{0,0,0},{2,1,1},{-2,-1,2}}') FROM many;
SELECT s -> 'counts' = :'serial_step'::jsonb -> 'counts' AS same_counts,
       abs((s ->> 'inertia')::float8 / (:'serial_step'::jsonb ->> 'inertia')::float8 - 1) < 1e-12 AS same_inertia
FROM (SELECT xsell.kmeans_step(z, '{{0,0,0},{2,1,1},{-2,-1,2}}') AS s FROM many) q;
RESET ALL;
SET client_min_messages = warning;
DROP SCHEMA kmeans_test CASCADE;
