-- Hand-written SQL of pg_xsell, included in the extension script by src/models/mod.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

COMMENT ON FUNCTION xsell.models() IS
  'Models installed in xsell.model_dir: name (what the model arguments take), kind (embedding or causal_lm), file format, parameter count, output dimensions of embedding models and the token window.';
