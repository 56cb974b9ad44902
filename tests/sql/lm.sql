-- Causal language-model scoring and generation inside the backend (SmolLM2-135M-Instruct,
-- Q4_1 GGUF, the default xsell.lm_model, dequantized to half precision: xsell.lm_weights).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
RESET client_min_messages;

-- Log-likelihood (natural log, every token conditioned on BOS and the tokens before it) and
-- perplexity. A fluent sentence scores higher than the same words shuffled.
SELECT round(xsell.lm_loglik('I bought running shoes, so I also need socks.')::numeric, 1) AS fluent,
       round(xsell.lm_loglik('socks need also I so shoes, running bought I.')::numeric, 1) AS shuffled,
       round(xsell.lm_perplexity('I bought running shoes, so I also need socks.')::numeric, 1) AS perplexity;

-- Per token: position, id, text, log-probability and whether it was the model's first choice.
SELECT pos, token_id, token, round(logprob::numeric, 2) AS logprob, is_greedy
FROM xsell.lm_token_logprobs('The capital of France is Paris.');

-- Conditional log-likelihood of a continuation given a context (lm-evaluation-harness rules).
SELECT round(xsell.lm_loglik('The capital of France is', ' Paris.')::numeric, 2) AS paris,
       round(xsell.lm_loglik('The capital of France is', ' a banana.')::numeric, 2) AS banana;

-- Rank next-purchase categories from a prompt describing recent purchases.
SELECT candidate, round(loglik::numeric, 2) AS loglik, round(avg_loglik::numeric, 2) AS avg_loglik,
       round(probability::numeric, 3) AS probability, rank
FROM xsell.lm_rank('Customers who bought a coffee grinder also bought',
                   ARRAY[' coffee beans', ' a lawn mower', ' paper filters', ' a milk frother']);

-- Generation with the chat template, greedy (deterministic).
SELECT xsell.lm_generate('What is the capital of France?', 32) AS reply;
SELECT xsell.lm_generate('Write a one-sentence thank-you note to a customer who bought hiking boots.', 40,
                         '{"system": "You are a friendly shop assistant."}') AS reply;
-- Raw text continuation without the template.
SELECT xsell.lm_generate('Shopping list: milk, eggs,', 8, '{"chat": false}') AS continuation;
-- Seeded sampling is reproducible.
SELECT xsell.lm_generate('Name a fruit.', 8, '{"temperature": 0.8, "top_p": 0.9, "seed": 7}')
     = xsell.lm_generate('Name a fruit.', 8, '{"temperature": 0.8, "top_p": 0.9, "seed": 7}') AS same_output;

-- How the weights are held: half (default), float (exact dequantized values) or quantized
-- (kept in Q4_1 blocks, exact, least memory). The scores agree to about 1e-3 relative.
SET xsell.lm_weights = float;
CREATE TEMP TABLE by_weights AS
SELECT 'float' AS weights, xsell.lm_loglik('I bought running shoes, so I also need socks.') AS loglik;
SET xsell.lm_weights = quantized;
INSERT INTO by_weights SELECT 'quantized', xsell.lm_loglik('I bought running shoes, so I also need socks.');
RESET xsell.lm_weights;
INSERT INTO by_weights SELECT 'half', xsell.lm_loglik('I bought running shoes, so I also need socks.');
SELECT weights, round(loglik::numeric, 1) AS loglik,
       abs(loglik / (SELECT loglik FROM by_weights WHERE weights = 'float') - 1) < 1e-3 AS within_1e_3_of_float
FROM by_weights;
SET xsell.lm_weights = double;

-- Edge cases: an empty text has no tokens.
SELECT xsell.lm_loglik('') AS empty_loglik, xsell.lm_perplexity('') AS empty_perplexity;
-- Digits are split one by one, and byte-level BPE handles any text.
SELECT string_agg(token, '|' ORDER BY pos) AS tokens FROM xsell.lm_token_logprobs('Order #2024: 3 Crème brûlées');

-- Bad input: clear errors.
SELECT xsell.lm_generate('hi', 0);
SELECT xsell.lm_generate('hi', 100000);
SELECT xsell.lm_generate('hi', 8, '{"top_p": 0}');
SELECT xsell.lm_generate('hi', 8, '{"colour": "red"}');
SELECT * FROM xsell.lm_rank('context', ARRAY[]::text[]);
SELECT * FROM xsell.lm_rank('context', ARRAY['a', NULL]);
SELECT xsell.lm_perplexity('hi', 'all-MiniLM-L6-v2');
SELECT xsell.lm_perplexity('hi', '.hidden');
SELECT xsell.lm_loglik('hi', 'there', 'missing-model');
SELECT xsell.lm_loglik(NULL) IS NULL AS null_in_null_out;
-- Long work is cancellable (checked between forward passes of 256 tokens and generated tokens).
SET statement_timeout = '300ms';
SELECT xsell.lm_loglik(repeat('buy more shoes ', 3000));
SELECT xsell.lm_generate('Tell me a long story.', 512);
SELECT count(*) FROM xsell.lm_rank(repeat('context ', 2000), array(SELECT ' candidate ' || g FROM generate_series(1, 500) g));
RESET statement_timeout;
