-- Hand-written SQL of pg_xsell, included in the extension script by src/lm/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

COMMENT ON FUNCTION xsell.lm_loglik(text) IS
  'Log-likelihood (natural log) of a text under xsell.lm_model: the sum over every token, the first conditioned on BOS (lm-evaluation-harness loglikelihood_rolling); long texts are scored in rolling windows. For another model, SET xsell.lm_model or use xsell.lm_token_logprobs(text, model).';
COMMENT ON FUNCTION xsell.lm_loglik(text, text) IS
  'Conditional log-likelihood of a continuation (second argument) given a context (first), lm-evaluation-harness semantics: trailing spaces of the context move to the continuation; continuation tokens = tokens(context || continuation) after tokens(context).';
COMMENT ON FUNCTION xsell.lm_loglik(text, text, text) IS
  'xsell.lm_loglik(context, continuation) with the named model (third argument).';
COMMENT ON FUNCTION xsell.lm_perplexity(text) IS
  'Perplexity exp(-loglik / tokens) of a text under xsell.lm_model (NULL for a text without tokens).';
COMMENT ON FUNCTION xsell.lm_perplexity(text, text) IS
  'Perplexity of a text under the named model (NULL for a text without tokens).';
COMMENT ON FUNCTION xsell.lm_token_logprobs(text) IS
  'One row per token of the text: 1-based position, token id and text, its log-probability given BOS and the preceding tokens, and whether it is the model''s arg-max prediction.';
COMMENT ON FUNCTION xsell.lm_token_logprobs(text, text) IS
  'xsell.lm_token_logprobs with the named model.';
COMMENT ON FUNCTION xsell.lm_rank(text, text[]) IS
  'Ranks candidate continuations of a context: loglik, loglik per token, probability (softmax of loglik over the candidates) and rank (1 = most likely). The context is evaluated once and the candidates are batched.';
COMMENT ON FUNCTION xsell.lm_rank(text, text[], text) IS
  'xsell.lm_rank with the named model.';
COMMENT ON FUNCTION xsell.lm_generate(text, integer, jsonb) IS
  'Generates a reply to a prompt (chat template of instruct models; options: chat (default true; false sends raw text), system, temperature (default 0 = greedy), top_p, seed, model). Stops at end of turn or after max_tokens (at most xsell.lm_max_tokens).';
