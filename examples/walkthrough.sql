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

\echo
\echo '== 4. Segment customers with K-means: choose k (elbow and silhouette), then fit'
SELECT k, round(inertia::numeric, 1) AS inertia, round(silhouette::numeric, 3) AS silhouette
FROM xsell.kmeans_sweep('SELECT z FROM shop.customer_z', ARRAY[3, 4, 5, 6], '{"seed": 1}');
ALTER TABLE shop.models ADD COLUMN IF NOT EXISTS kmeans xsell.kmeans_model;
INSERT INTO shop.models (name, kmeans)
SELECT 'segments', xsell.kmeans_fit(z, 5, '{"seed": 1}') FROM shop.customer_z;
DROP TABLE IF EXISTS shop.customer_segments;
CREATE TABLE shop.customer_segments AS
SELECT c.customer_id, xsell.kmeans_assign(c.z, m.kmeans) AS segment
FROM shop.customer_z c, shop.models m WHERE m.name = 'segments';
-- What characterises each segment: its two strongest category shares, and the hidden persona
-- the generator used (the segmentation should rediscover it).
WITH shares AS (
  SELECT s.segment, c.name, avg(f.features[3 + c.category_id]) AS share,
         row_number() OVER (PARTITION BY s.segment ORDER BY avg(f.features[3 + c.category_id]) DESC) AS rn
  FROM shop.customer_segments s JOIN shop.customer_features f USING (customer_id) CROSS JOIN shop.categories c
  GROUP BY s.segment, c.name
), personas AS (
  SELECT s.segment, count(*) AS customers, mode() WITHIN GROUP (ORDER BY cu.persona) AS main_persona
  FROM shop.customer_segments s JOIN shop.customers cu USING (customer_id) GROUP BY s.segment
)
SELECT p.segment, p.customers,
       (SELECT string_agg(name || ' ' || round(100 * share) || '%', ', ' ORDER BY share DESC)
        FROM shares WHERE segment = p.segment AND rn <= 2) AS top_category_shares,
       p.main_persona,
       round(100.0 * (SELECT count(*) FROM shop.customer_segments s JOIN shop.customers cu USING (customer_id)
                      WHERE s.segment = p.segment AND cu.persona = p.main_persona) / p.customers) AS persona_purity_pct
FROM personas p ORDER BY p.segment;

\echo
\echo '== 5. Cross-sell rules: which products are bought together, across categories?'
DROP TABLE IF EXISTS shop.baskets;
CREATE TABLE shop.baskets AS
SELECT o.order_id, o.customer_id, array_agg(p.name ORDER BY p.name) AS items
FROM shop.orders o JOIN shop.order_lines ol USING (order_id) JOIN shop.products p USING (product_id)
GROUP BY o.order_id, o.customer_id;
ALTER TABLE shop.models ADD COLUMN IF NOT EXISTS itemsets xsell.itemsets;
INSERT INTO shop.models (name, itemsets)
SELECT 'baskets', xsell.frequent_itemsets(items, 0.003) FROM shop.baskets;
SELECT r.antecedent, r.consequent, round(r.confidence::numeric, 2) AS confidence,
       round(r.lift::numeric, 1) AS lift, r.count AS baskets
FROM shop.models m, xsell.rules(m.itemsets, min_confidence => 0.3, min_lift => 2) r
WHERE m.name = 'baskets' AND cardinality(r.antecedent) = 1 AND cardinality(r.consequent) = 1
  AND (SELECT array_agg(DISTINCT category_id) FROM shop.products WHERE name = ANY (r.antecedent))
   <> (SELECT array_agg(DISTINCT category_id) FROM shop.products WHERE name = ANY (r.consequent))
ORDER BY r.lift DESC, r.confidence DESC LIMIT 8;

\echo
\echo '== 6. Cart recommendations for a shopper with running shoes and a cookbook in the cart'
SELECT item, round(score::numeric, 2) AS score, round(lift::numeric, 1) AS lift, because
FROM shop.models m, xsell.recommend(ARRAY['running shoes', 'italian cookbook'], m.itemsets, n => 4) r
WHERE m.name = 'baskets';

\echo
\echo '== 7. Cross-sell rules per segment (GROUP BY segment): the strongest rule of each'
SELECT DISTINCT ON (s.segment) s.segment, r.antecedent, r.consequent,
       round(r.confidence::numeric, 2) AS confidence, round(r.lift::numeric, 1) AS lift
FROM (SELECT cs.segment, xsell.frequent_itemsets(b.items, 0.01) AS m
      FROM shop.baskets b JOIN shop.customer_segments cs USING (customer_id)
      GROUP BY cs.segment) s,
     xsell.rules(s.m, min_confidence => 0.3) r
WHERE cardinality(r.antecedent) = 1 AND cardinality(r.consequent) = 1
ORDER BY s.segment, r.lift DESC, r.confidence DESC;

\echo
\echo '== 8. Search intent: which category is each search query about? (embeddings, no Python)'
-- Category descriptions are the labels; their embeddings are computed once per backend.
DROP TABLE IF EXISTS shop.search_intent;
CREATE TABLE shop.search_intent AS
SELECT s.search_id, s.customer_id, s.query,
       xsell.top_intent(s.query, (SELECT array_agg(description ORDER BY category_id) FROM shop.categories)) AS intent
FROM shop.search_log s;
SELECT DISTINCT i.query, c.name AS category
FROM shop.search_intent i JOIN shop.categories c ON c.description = i.intent
ORDER BY category, query;

\echo
\echo '== 9. Cross-domain opportunities: customers searching in a category they never bought from'
SELECT c.name AS searched_category, count(DISTINCT i.customer_id) AS customers_new_to_it,
       (SELECT array_agg(DISTINCT query) FROM shop.search_intent x WHERE x.intent = c.description) AS example_queries
FROM shop.search_intent i JOIN shop.categories c ON c.description = i.intent
WHERE NOT EXISTS (SELECT 1 FROM shop.orders o JOIN shop.order_lines ol USING (order_id)
                  JOIN shop.products p USING (product_id)
                  WHERE o.customer_id = i.customer_id AND p.category_id = c.category_id)
GROUP BY c.name, c.description ORDER BY customers_new_to_it DESC;

\echo
\echo '== 10. Reviews reveal unmet needs: the closest product in another category'
-- Product names are embedded once with embed_batch; each review is matched to them.
DROP TABLE IF EXISTS shop.product_vectors;
CREATE TABLE shop.product_vectors AS
SELECT a.ids[b.ord] AS product_id, b.embedding
FROM (SELECT array_agg(name ORDER BY product_id) AS names, array_agg(product_id ORDER BY product_id) AS ids
      FROM shop.products) a, xsell.embed_batch(a.names) b;
SELECT left(r.body, 60) AS review, bought.name AS reviewed, best.name AS suggest,
       round(best.similarity::numeric, 2) AS similarity
FROM shop.reviews r
JOIN shop.products bought ON bought.product_id = r.product_id
CROSS JOIN LATERAL (
  SELECT p.name, xsell.cosine_similarity(v.embedding, xsell.embed(r.body)) AS similarity
  FROM shop.product_vectors v JOIN shop.products p USING (product_id)
  WHERE p.category_id <> bought.category_id
  ORDER BY similarity DESC LIMIT 1) best
ORDER BY r.review_id;

-- The same reviews scored against the category descriptions: where a review points away
-- from the category of the product it reviews, there is a cross-category need.
SELECT left(r.body, 60) AS review, rc.name AS reviewed_category, nc.name AS points_to,
       round(top.score::numeric, 2) AS score
FROM shop.reviews r
JOIN shop.products bought ON bought.product_id = r.product_id
JOIN shop.categories rc ON rc.category_id = bought.category_id
CROSS JOIN LATERAL (
  SELECT label, score FROM xsell.intent_scores(r.body, (SELECT array_agg(description ORDER BY category_id) FROM shop.categories))
  WHERE label <> rc.description ORDER BY score DESC LIMIT 1) top
JOIN shop.categories nc ON nc.description = top.label
ORDER BY r.review_id;

\echo
\echo '== 11. Next-purchase category from purchase history (causal LM: SmolLM2-135M, in-process)'
-- The prompt describes a customer's three most recent purchases; lm_rank scores every
-- category name as the continuation (the context is evaluated once, the candidates batched).
WITH last_bought AS (
  SELECT o.customer_id, p.name, max(o.order_date) AS last_date
  FROM shop.orders o JOIN shop.order_lines ol USING (order_id) JOIN shop.products p USING (product_id)
  WHERE o.customer_id IN (12, 48, 77)
  GROUP BY o.customer_id, p.name
), recent AS (
  SELECT customer_id, string_agg(name, ', ' ORDER BY last_date DESC, name) AS items
  FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY last_date DESC, name) AS n
        FROM last_bought) x
  WHERE n <= 3
  GROUP BY customer_id
)
SELECT customer_id, recent_purchases, next_category, round(lift::numeric, 1) AS lift_vs_prior
FROM (
  SELECT r.customer_id, r.items AS recent_purchases, k.candidate AS next_category,
         -- How much the history raises each category over the model's prior (PMI-style
         -- calibration: a small LM otherwise favours generic continuations).
         exp(k.loglik - p.loglik) AS lift,
         row_number() OVER (PARTITION BY r.customer_id ORDER BY k.loglik - p.loglik DESC) AS n
  FROM recent r,
       xsell.lm_rank('A customer recently bought: ' || r.items || '. The next thing they will buy is from the category',
                     (SELECT array_agg(' ' || name ORDER BY category_id) FROM shop.categories)) k,
       xsell.lm_rank('A customer recently bought some things. The next thing they will buy is from the category',
                     (SELECT array_agg(' ' || name ORDER BY category_id) FROM shop.categories)) p
  WHERE p.candidate = k.candidate
) x
WHERE n <= 2
ORDER BY customer_id, n;

\echo
\echo '== 12. A service reply to a review, generated in the database (greedy, reproducible)'
SELECT left(body, 70) AS review,
       xsell.lm_generate('Write a short, friendly reply to this customer review: ' || body, 48,
                         '{"system": "You are the customer service team of an online shop."}') AS reply
FROM shop.reviews WHERE review_id IN (2, 4);
