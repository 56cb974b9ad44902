-- `\df xsell.*` explains itself: every function, aggregate and type of the extension has a
-- COMMENT, and every function declares its parallel safety.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_xsell;
RESET client_min_messages;

SELECT p.oid::regprocedure AS function_without_comment
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'xsell' AND obj_description(p.oid, 'pg_proc') IS NULL
ORDER BY 1;

SELECT t.typname AS type_without_comment
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'xsell' AND t.typtype = 'b' AND t.typcategory <> 'A'
  AND obj_description(t.oid, 'pg_type') IS NULL;

-- Aggregates and row functions are PARALLEL SAFE; only the query-driven trainers are not.
SELECT p.oid::regprocedure AS not_parallel_safe, p.proparallel
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'xsell' AND p.proparallel <> 's'
ORDER BY 1;

-- Every SQL object of the extension lives in the schema xsell.
SELECT count(*) AS objects_outside_xsell
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_xsell'
JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
WHERE p.pronamespace <> 'xsell'::regnamespace;
