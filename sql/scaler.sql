-- Hand-written SQL of pg_xsell, included in the extension script by src/scaler/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

CREATE FUNCTION xsell.scaler_fit_trans(state internal, features float8[]) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'xsell_scaler_fit_trans';

CREATE AGGREGATE xsell.scaler_fit(features float8[]) (
    sfunc = xsell.scaler_fit_trans,
    stype = internal,
    finalfunc = xsell.scaler_fit_final,
    combinefunc = xsell.scaler_fit_combine,
    serialfunc = xsell.scaler_fit_serial,
    deserialfunc = xsell.scaler_fit_deserial,
    parallel = safe
);

CREATE CAST (xsell.scaler AS jsonb) WITH INOUT AS ASSIGNMENT;

COMMENT ON FUNCTION xsell.scaler_in(cstring) IS 'Input function of the type xsell.scaler: parses and validates its JSON text form.';
COMMENT ON FUNCTION xsell.scaler_out(xsell.scaler) IS 'Output function of the type xsell.scaler: its JSON text form.';
COMMENT ON TYPE xsell.scaler IS
  'A fitted standard scaler (scikit-learn StandardScaler semantics). Text form: JSON with n (rows), mean, scale, var (population variance) and count (non-missing values) per feature. Cast to jsonb to read it.';
COMMENT ON AGGREGATE xsell.scaler_fit(float8[]) IS
  'Fits a standard scaler over feature rows: per-feature mean and population standard deviation (ddof 0; a constant feature gets scale 1). NULL rows are skipped; NULL or NaN elements are ignored per feature. Single pass (Welford), parallel safe (Chan merge).';
COMMENT ON FUNCTION xsell.scale(float8[], xsell.scaler) IS
  'Standardizes a feature row: (x - mean) / scale per feature. NULL and NaN elements stay NULL.';
COMMENT ON FUNCTION xsell.unscale(float8[], xsell.scaler) IS
  'Inverse of xsell.scale: z * scale + mean per feature.';
COMMENT ON FUNCTION xsell.scaler_features(xsell.scaler) IS
  'One row per feature of a scaler: feature (1-based), count, mean, scale, var.';
COMMENT ON FUNCTION xsell.scaler_fit_trans(internal, float8[]) IS 'Support function of the aggregate xsell.scaler_fit (transition).';
COMMENT ON FUNCTION xsell.scaler_fit_combine(internal, internal) IS 'Support function of the aggregate xsell.scaler_fit (parallel combine).';
COMMENT ON FUNCTION xsell.scaler_fit_serial(internal) IS 'Support function of the aggregate xsell.scaler_fit (serialize a partial state).';
COMMENT ON FUNCTION xsell.scaler_fit_deserial(bytea, internal) IS 'Support function of the aggregate xsell.scaler_fit (deserialize a partial state).';
COMMENT ON FUNCTION xsell.scaler_fit_final(internal) IS 'Support function of the aggregate xsell.scaler_fit (final).';
