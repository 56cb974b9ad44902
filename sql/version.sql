-- Hand-written SQL of pg_xsell, included in the extension script by src/lib.rs
-- (extension_sql_file!): aggregates, casts and the COMMENT ON of every object there.

COMMENT ON FUNCTION xsell.version() IS
  'pg_xsell version with the pgrx and PostgreSQL versions it was built for.';
