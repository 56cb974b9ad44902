-- Hand-written SQL of pg_xsell, included in the extension script by src/kmeans/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

CREATE FUNCTION xsell.kmeans_fit_trans(state internal, features float8[], k int) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_kmeans_fit_trans';
CREATE FUNCTION xsell.kmeans_fit_trans(state internal, features float8[], k int, options jsonb) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_kmeans_fit_trans';
-- kmeans_fit's partial state is the gathered rows themselves, so a parallel plan does not
-- shrink the data: every worker copies its rows into a bytea (serial), sends them through the
-- Gather queue, and the leader copies them into one buffer (combine) before training. The
-- planner costs support functions per state, not per row, so both carry a cost that stands
-- for copying a few million rows: partial aggregation is then planned only for tables of
-- roughly ten million rows and more, where the parallel scan can pay for the copies. On 1M x 16
-- rows the plain plan is ~0.25 s faster on 2 cores (README > Benchmarks); a parallel plan
-- gives the same model.
CREATE FUNCTION xsell.kmeans_fit_serial(state internal) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE COST 10000000 LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_kmeans_fit_serial';
ALTER FUNCTION xsell.kmeans_fit_combine(internal, internal) COST 10000000;
CREATE AGGREGATE xsell.kmeans_fit(features float8[], k int) (
    sfunc = xsell.kmeans_fit_trans, stype = internal,
    finalfunc = xsell.kmeans_fit_final, combinefunc = xsell.kmeans_fit_combine,
    serialfunc = xsell.kmeans_fit_serial, deserialfunc = xsell.kmeans_fit_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.kmeans_fit(features float8[], k int, options jsonb) (
    sfunc = xsell.kmeans_fit_trans, stype = internal,
    finalfunc = xsell.kmeans_fit_final, combinefunc = xsell.kmeans_fit_combine,
    serialfunc = xsell.kmeans_fit_serial, deserialfunc = xsell.kmeans_fit_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.silhouette(features float8[], cluster int) (
    sfunc = xsell.silhouette_trans, stype = internal,
    finalfunc = xsell.silhouette_final, combinefunc = xsell.silhouette_combine,
    serialfunc = xsell.silhouette_serial, deserialfunc = xsell.silhouette_deserial,
    parallel = safe);
CREATE AGGREGATE xsell.silhouette(features float8[], cluster int, sample_size int) (
    sfunc = xsell.silhouette_trans, stype = internal,
    finalfunc = xsell.silhouette_final, combinefunc = xsell.silhouette_combine,
    serialfunc = xsell.silhouette_serial, deserialfunc = xsell.silhouette_deserial,
    parallel = safe);

CREATE CAST (xsell.kmeans_model AS jsonb) WITH INOUT AS ASSIGNMENT;

CREATE FUNCTION xsell.kmeans_centroids(model xsell.kmeans_model) RETURNS float8[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
AS $$ SELECT array_agg(c.centroid ORDER BY c.cluster) FROM xsell.kmeans_clusters(model) c $$;

COMMENT ON FUNCTION xsell.kmeans_model_in(cstring) IS 'Input function of the type xsell.kmeans_model: parses and validates its JSON text form.';
COMMENT ON FUNCTION xsell.kmeans_model_out(xsell.kmeans_model) IS 'Output function of the type xsell.kmeans_model: its JSON text form.';
COMMENT ON TYPE xsell.kmeans_model IS
  'A trained K-means model: JSON with k, dims, n_rows, centroids (k arrays of dims numbers), sizes, inertia, iterations, converged, seed, algorithm, init. Clusters are numbered 0..k-1 by descending size.';
COMMENT ON AGGREGATE xsell.kmeans_fit(float8[], int) IS
  'K-means over feature rows gathered in memory (k-means++ seeding, Hamerly-accelerated exact Lloyd, scikit-learn semantics, seed 0). Parallel safe; bounded by xsell.max_fit_memory_mb (use xsell.kmeans_train beyond).';
COMMENT ON AGGREGATE xsell.kmeans_fit(float8[], int, jsonb) IS
  'K-means with options {"seed":0,"max_iter":300,"tol":1e-4,"n_init":1,"init":"k-means++"|"random"|[[centroid],...],"algorithm":"hamerly"|"lloyd"}.';
COMMENT ON AGGREGATE xsell.silhouette(float8[], int) IS
  'Mean silhouette coefficient (euclidean, scikit-learn semantics) of rows labelled by cluster; exact up to 10000 rows, a seeded uniform sample of 10000 beyond.';
COMMENT ON AGGREGATE xsell.silhouette(float8[], int, int) IS
  'Mean silhouette coefficient, exact up to sample_size rows and on a seeded, order-independent uniform sample of sample_size rows beyond.';
COMMENT ON FUNCTION xsell.kmeans_assign(float8[], xsell.kmeans_model) IS 'The cluster (0..k-1) whose centroid is nearest to the row.';
COMMENT ON FUNCTION xsell.kmeans_distance(float8[], xsell.kmeans_model) IS 'Euclidean distance from the row to its nearest centroid.';
COMMENT ON FUNCTION xsell.kmeans_centroids(xsell.kmeans_model) IS 'The centroids as a k x d float8 array (row i = cluster i).';
COMMENT ON FUNCTION xsell.kmeans_clusters(xsell.kmeans_model) IS 'One row per cluster: cluster, size (training rows), centroid.';
COMMENT ON FUNCTION xsell.kmeans_fit_trans(internal, float8[], int) IS 'Support function of the aggregate xsell.kmeans_fit (transition).';
COMMENT ON FUNCTION xsell.kmeans_fit_trans(internal, float8[], int, jsonb) IS 'Support function of the aggregate xsell.kmeans_fit (transition).';
COMMENT ON FUNCTION xsell.kmeans_fit_combine(internal, internal) IS 'Support function of the aggregate xsell.kmeans_fit (parallel combine).';
COMMENT ON FUNCTION xsell.kmeans_fit_serial(internal) IS 'Support function of the aggregate xsell.kmeans_fit (serialize).';
COMMENT ON FUNCTION xsell.kmeans_fit_deserial(bytea, internal) IS 'Support function of the aggregate xsell.kmeans_fit (deserialize).';
COMMENT ON FUNCTION xsell.kmeans_fit_final(internal) IS 'Support function of the aggregate xsell.kmeans_fit (final: trains the model).';
COMMENT ON FUNCTION xsell.silhouette_trans(internal, float8[], int) IS 'Support function of the aggregate xsell.silhouette (transition).';
COMMENT ON FUNCTION xsell.silhouette_trans(internal, float8[], int, int) IS 'Support function of the aggregate xsell.silhouette (transition).';
COMMENT ON FUNCTION xsell.silhouette_combine(internal, internal) IS 'Support function of the aggregate xsell.silhouette (parallel combine).';
COMMENT ON FUNCTION xsell.silhouette_serial(internal) IS 'Support function of the aggregate xsell.silhouette (serialize).';
COMMENT ON FUNCTION xsell.silhouette_deserial(bytea, internal) IS 'Support function of the aggregate xsell.silhouette (deserialize).';
COMMENT ON FUNCTION xsell.silhouette_final(internal) IS 'Support function of the aggregate xsell.silhouette (final).';
