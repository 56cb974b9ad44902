-- Hand-written SQL of pg_xsell, included in the extension script by src/kmeans/step.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

CREATE FUNCTION xsell.kmeans_step_sfunc(state bytea, features float8[], centroids float8[]) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_kmeans_step_sfunc';
CREATE FUNCTION xsell.kmeans_step_combine(a bytea, b bytea) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_kmeans_step_combine';
CREATE AGGREGATE xsell.kmeans_step(features float8[], centroids float8[]) (
    sfunc = xsell.kmeans_step_sfunc, stype = bytea,
    finalfunc = xsell.kmeans_step_final, combinefunc = xsell.kmeans_step_combine,
    parallel = safe);
COMMENT ON AGGREGATE xsell.kmeans_step(float8[], float8[]) IS
  'One Lloyd pass with a fixed-size bytea state (centroids, per-cluster sums and counts, inertia) updated in place: assigns each row to the nearest of the given k x d centroids and returns jsonb {k, n, inertia, counts, centroids (new means; an empty cluster keeps its centroid), center_shift}. Parallel safe, typed state (Citus can push it down). Drive your own training with it.';
COMMENT ON FUNCTION xsell.kmeans_step_sfunc(bytea, float8[], float8[]) IS 'Support function of the aggregate xsell.kmeans_step (transition, in place).';
COMMENT ON FUNCTION xsell.kmeans_step_combine(bytea, bytea) IS 'Support function of the aggregate xsell.kmeans_step (combine partial states).';
COMMENT ON FUNCTION xsell.kmeans_step_final(bytea) IS 'Support function of the aggregate xsell.kmeans_step (final: new centroids, counts, inertia).';
