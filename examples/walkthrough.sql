-- pg_xsell walkthrough: cross-domain marketing on the generated sample shop.
-- Run by `make demo` after examples/sample_shop.sql. Each step is plain SQL.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
\set QUIET on
SELECT xsell.version();

\echo
\echo '== 1. Per-customer behaviour features (recency, frequency, monetary value, category shares)'
DROP TABLE IF EXISTS shop.customer_features;
CREATE TABLE shop.customer_features AS
WITH spend AS (
  SELECT o.customer_id, p.category_id, sum(ol.quantity * ol.unit_price)::float8 AS amount
  FROM shop.orders o JOIN shop.order_lines ol USING (order_id) JOIN shop.products p USING (product_id)
  GROUP BY 1, 2
), totals AS (
  SELECT o.customer_id,
         (date '2026-12-01' - max(o.order_date))::float8 AS recency_days,
         count(DISTINCT o.order_id)::float8 AS frequency,
         sum(ol.quantity * ol.unit_price)::float8 AS monetary
  FROM shop.orders o JOIN shop.order_lines ol USING (order_id)
  GROUP BY 1
)
SELECT t.customer_id,
       ARRAY[t.recency_days, t.frequency, ln(1 + t.monetary)]
       || ARRAY(SELECT coalesce(s.amount, 0) / t.monetary
                FROM shop.categories c
                LEFT JOIN spend s ON s.customer_id = t.customer_id AND s.category_id = c.category_id
                ORDER BY c.category_id) AS features
FROM totals t;
SELECT customer_id, features[1:3] AS rfm, array_length(features, 1) AS n_features
FROM shop.customer_features ORDER BY customer_id LIMIT 3;

\echo
\echo '== 2. Standardize the features: one scaler value, stored in a table'
DROP TABLE IF EXISTS shop.models;
CREATE TABLE shop.models (name text PRIMARY KEY, created timestamptz DEFAULT now(), scaler xsell.scaler);
INSERT INTO shop.models (name, scaler)
SELECT 'customer_features', xsell.scaler_fit(features) FROM shop.customer_features;
SELECT f.feature, coalesce(n.name, 'share_' || c.name) AS name, f.count,
       round(f.mean::numeric, 3) AS mean, round(f.scale::numeric, 3) AS scale
FROM shop.models m, xsell.scaler_features(m.scaler) f
LEFT JOIN (VALUES (1, 'recency_days'), (2, 'frequency'), (3, 'log_monetary')) n(feature, name) USING (feature)
LEFT JOIN shop.categories c ON c.category_id = f.feature - 3
WHERE m.name = 'customer_features' ORDER BY f.feature;

\echo
\echo '== 3. Standardized rows (mean 0, unit variance) for downstream segmentation'
DROP TABLE IF EXISTS shop.customer_z;
CREATE TABLE shop.customer_z AS
SELECT c.customer_id, xsell.scale(c.features, m.scaler) AS z
FROM shop.customer_features c, shop.models m WHERE m.name = 'customer_features';
SELECT customer_id, (SELECT array_agg(round(v::numeric, 2)) FROM unnest(z[1:5]) v) AS z_first5
FROM shop.customer_z ORDER BY customer_id LIMIT 3;
