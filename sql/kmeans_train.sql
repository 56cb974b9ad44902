-- Hand-written SQL of pg_xsell, included in the extension script by src/kmeans/train.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

CREATE AGGREGATE xsell.kmeans_pass(features float8[], spec jsonb) (
    sfunc = xsell.kmeans_pass_trans, stype = internal,
    finalfunc = xsell.kmeans_pass_final, combinefunc = xsell.kmeans_pass_combine,
    serialfunc = xsell.kmeans_pass_serial, deserialfunc = xsell.kmeans_pass_deserial,
    parallel = safe);
COMMENT ON AGGREGATE xsell.kmeans_pass(float8[], jsonb) IS
  'Internal pass of xsell.kmeans_train (init / k-means|| sampling / Lloyd step), driven by a jsonb spec.';
COMMENT ON FUNCTION xsell.kmeans_train(text, integer, jsonb) IS
  'K-means over the rows of a query returning one float8[] column, streaming in passes with bounded memory: k-means|| seeding (a handful of passes) then Lloyd passes, each a parallel-safe aggregate. The query must be one SELECT; it runs with the caller''s privileges. Options as kmeans_fit (seed, max_iter, tol, init: "k-means++" or explicit centroids).';
COMMENT ON FUNCTION xsell.kmeans_sweep(text, integer[], jsonb) IS
  'Trains one model per k with xsell.kmeans_train and returns k, inertia, silhouette (sampled) and the model, to choose k.';
COMMENT ON FUNCTION xsell.kmeans_pass_trans(internal, float8[], jsonb) IS 'Support function of the aggregate xsell.kmeans_pass (transition).';
COMMENT ON FUNCTION xsell.kmeans_pass_final(internal) IS 'Support function of the aggregate xsell.kmeans_pass (final).';
COMMENT ON FUNCTION xsell.kmeans_pass_combine(internal, internal) IS 'Support function of the aggregate xsell.kmeans_pass (parallel combine).';
COMMENT ON FUNCTION xsell.kmeans_pass_serial(internal) IS 'Support function of the aggregate xsell.kmeans_pass (serialize).';
COMMENT ON FUNCTION xsell.kmeans_pass_deserial(bytea, internal) IS 'Support function of the aggregate xsell.kmeans_pass (deserialize).';
