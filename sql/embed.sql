-- Hand-written SQL of pg_xsell, included in the extension script by src/embed/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

COMMENT ON FUNCTION xsell.embed(text) IS
  'Sentence embedding of a text with the model in xsell.embedding_model (default all-MiniLM-L6-v2: 384 dims, L2-normalised, mean pooling; texts over 256 tokens are truncated as sentence-transformers does). Cast to pgvector with ::vector.';
COMMENT ON FUNCTION xsell.embed(text, text) IS
  'Sentence embedding of a text (first argument) with the named model (second argument; see xsell.models()).';
COMMENT ON FUNCTION xsell.embed_batch(text[]) IS
  'Embeds an array of texts in length-sorted mini-batches (the fast way to embed a table: array_agg the texts, join back on ord). One row per element: ord (1-based) and embedding (NULL for a NULL text).';
COMMENT ON FUNCTION xsell.embed_batch(text[], text) IS
  'xsell.embed_batch with the named model.';
COMMENT ON FUNCTION xsell.cosine_similarity(real[], real[]) IS
  'Cosine similarity of two vectors of equal length (0 when either is all zeros, as scikit-learn).';
COMMENT ON FUNCTION xsell.cosine_similarity(double precision[], double precision[]) IS
  'Cosine similarity of two vectors of equal length (0 when either is all zeros, as scikit-learn).';
COMMENT ON FUNCTION xsell.intent_scores(text, text[], jsonb) IS
  'Zero-shot intent scores of a text against labels (short descriptions work well): softmax of cosine similarity / temperature, summing to 1, highest first. Options: temperature (default 0.05), model. Label embeddings are cached per backend.';
COMMENT ON FUNCTION xsell.top_intent(text, text[], jsonb) IS
  'The label of xsell.intent_scores with the highest score (ties: the first label). Options: temperature, model.';
