-- Sentence embeddings and intent scoring, computed inside the backend (all-MiniLM-L6-v2,
-- the default xsell.embedding_model). No Python, no network.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
RESET client_min_messages;
CREATE SCHEMA embed_test;
SET search_path = embed_test, public;

-- What is installed (a model argument takes the name).
SELECT name, kind, format, parameters, dims, max_tokens FROM xsell.models() ORDER BY name;

-- One text gives a 384-dimensional unit vector (real[]; cast to pgvector with ::vector).
SELECT array_length(xsell.embed('waterproof hiking boots'), 1) AS dims,
       round(sqrt((SELECT sum(x * x) FROM unnest(xsell.embed('waterproof hiking boots')::float8[]) x))::numeric, 4) AS norm;

-- Related products are close, unrelated ones far.
SELECT round(xsell.cosine_similarity(xsell.embed('waterproof hiking boots'),
                                     xsell.embed('trail shoes for mountain walks'))::numeric, 2) AS related,
       round(xsell.cosine_similarity(xsell.embed('waterproof hiking boots'),
                                     xsell.embed('espresso machine with milk frother'))::numeric, 2) AS unrelated;

-- A whole table: array_agg the texts, embed them in length-sorted mini-batches, join back on ord.
CREATE TABLE products (id int PRIMARY KEY, title text);
INSERT INTO products VALUES
  (1, 'Waterproof hiking boots'), (2, 'Stainless steel water bottle, 750 ml'),
  (3, 'Espresso machine with milk frother'), (4, 'Organic cotton baby bodysuit'),
  (5, NULL), (6, 'Noise-cancelling wireless earbuds');
CREATE TABLE product_vectors AS
SELECT p.id, b.embedding
FROM (SELECT array_agg(title ORDER BY id) AS titles, array_agg(id ORDER BY id) AS ids FROM products) a
CROSS JOIN LATERAL xsell.embed_batch(a.titles) b
JOIN products p ON p.id = a.ids[b.ord];
SELECT id, array_length(embedding, 1) AS dims FROM product_vectors ORDER BY id;

-- Batched and per-row vectors agree.
SELECT bool_and(xsell.cosine_similarity(v.embedding, xsell.embed(p.title)) > 0.99999) AS batch_equals_per_row
FROM product_vectors v JOIN products p USING (id) WHERE p.title IS NOT NULL;

-- Nearest products to a search query.
SELECT p.title, round(xsell.cosine_similarity(v.embedding, xsell.embed('coffee maker'))::numeric, 2) AS similarity
FROM product_vectors v JOIN products p USING (id)
WHERE v.embedding IS NOT NULL
ORDER BY similarity DESC LIMIT 3;

-- Intent scoring: softmax over cosine similarity / temperature (default 0.05); sums to 1.
SELECT label, round(score::numeric, 3) AS score
FROM xsell.intent_scores('need something to keep my toddler warm in winter',
       ARRAY['baby and kids clothing', 'outdoor and hiking gear', 'kitchen appliances', 'consumer electronics']);
SELECT round(sum(score)::numeric, 12) AS total
FROM xsell.intent_scores('gift for a coffee lover', ARRAY['kitchen appliances', 'consumer electronics']);

-- The top label per search query (label embeddings are cached per backend).
CREATE TABLE search_log (q text);
INSERT INTO search_log VALUES ('bluetooth headphones for the gym'), ('crib sheets and onesies'),
  ('tent for 4 people'), ('milk frother'), (NULL);
SELECT q, xsell.top_intent(q, ARRAY['baby and kids clothing', 'outdoor and hiking gear',
                                    'kitchen appliances', 'consumer electronics']) AS intent
FROM search_log ORDER BY q;

-- A higher temperature flattens the distribution.
SELECT round(max(score)::numeric, 2) AS top_score_at_t1
FROM xsell.intent_scores('tent for 4 people', ARRAY['outdoor and hiking gear', 'kitchen appliances'],
                         '{"temperature": 1}');

-- Texts longer than 256 tokens are truncated as sentence-transformers does: the vector is
-- that of the first 256 tokens.
SELECT round(xsell.cosine_similarity(xsell.embed(repeat('hiking boots and tents ', 200)),
                                     xsell.embed(repeat('hiking boots and tents ', 100)))::numeric, 4) AS truncated_equal;

-- Bad input: clear errors.
SELECT xsell.embed('x', '../../etc/passwd');
SELECT xsell.embed('x', 'no-such-model');
SELECT xsell.embed('x', 'SmolLM2-135M-Instruct.Q4_1');
SELECT xsell.cosine_similarity(ARRAY[1, 2]::real[], ARRAY[1, 2, 3]::real[]);
SELECT xsell.cosine_similarity(ARRAY[1, NULL]::real[], ARRAY[1, 2]::real[]);
SELECT xsell.cosine_similarity(ARRAY['NaN', 1]::float8[], ARRAY[1, 2]::float8[]);
SELECT * FROM xsell.intent_scores('x', ARRAY[]::text[]);
SELECT * FROM xsell.intent_scores('x', ARRAY['a', NULL]);
SELECT * FROM xsell.intent_scores('x', ARRAY['a'], '{"temperature": 0}');
SELECT * FROM xsell.intent_scores('x', ARRAY['a'], '{"temprature": 1}');
-- An ordinary user cannot move the model folder.
CREATE ROLE embed_test_user;
SET ROLE embed_test_user;
SET xsell.model_dir = '/etc';
RESET ROLE;
DROP ROLE embed_test_user;
-- Long work is cancellable: statement_timeout stops a big batch (checked between mini-batches).
SET statement_timeout = '300ms';
SELECT count(*) FROM xsell.embed_batch(array(SELECT repeat('word ', 200) || g FROM generate_series(1, 2000) g));
RESET statement_timeout;
-- NULL in, NULL out.
SELECT xsell.embed(NULL) IS NULL AS null_text;

DROP SCHEMA embed_test CASCADE;
