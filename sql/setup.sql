-- pgvpd SQL kit: the role, the context accessor and the table-protection helpers.
--
-- Run as a superuser (or, on managed PostgreSQL, as the owner of the tables to
-- protect with CREATEROLE):   psql -v ON_ERROR_STOP=1 -f sql/setup.sql
--
-- Idempotent: every statement can be re-run; re-running upgrades a pgvpd 1.0
-- installation in place (same function names and argument lists).
--
-- How it fits together: a client logs in through pgvpd as `app_user.acme`;
-- pgvpd logs in upstream as `app_user`, sets `app.current_tenant_id = 'acme'`
-- and the role, and refuses the session if that role is a superuser or has
-- BYPASSRLS. The policies created by pgvpd_protect() compare each row's tenant
-- column with current_tenant_id(); when the variable is unset or empty it
-- returns NULL, `col = NULL` is never true, so the session sees no rows
-- (fail closed).

\set ON_ERROR_STOP 1

-- ---------------------------------------------------------------------------
-- 1. The application role.
--    NOSUPERUSER and NOBYPASSRLS are what make RLS apply at all (pgvpd refuses
--    sessions that have either). NOINHERIT on creation: privileges of roles
--    granted to app_user are not used implicitly.
--    An existing role is only tightened (NOSUPERUSER NOBYPASSRLS); its other
--    attributes and its password are left alone. On managed PostgreSQL the
--    ALTER may be refused: we say so and continue, and pgvpd's own check at
--    login still refuses a superuser/BYPASSRLS role.
-- ---------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'app_user') THEN
        CREATE ROLE app_user LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT
            PASSWORD 'changeme';
        RAISE NOTICE 'pgvpd: created role app_user with password ''changeme'' -- change it: ALTER ROLE app_user PASSWORD ''...''';
    ELSE
        BEGIN
            ALTER ROLE app_user NOSUPERUSER NOBYPASSRLS;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pgvpd: not allowed to ALTER ROLE app_user; verify by hand that '
                'SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = ''app_user'' '
                'returns f, f (pgvpd refuses the session otherwise)';
        END;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- 2. current_tenant_id(): the tenant of this session, NULL when unset or empty.
--    Plain LANGUAGE sql with no exception block, STABLE, SECURITY INVOKER and
--    no SET clause: the planner inlines it, so a policy costs one
--    current_setting() call per query (not a PL/pgSQL call and a
--    subtransaction per row, as in 1.0). current_setting(..., true) returns
--    NULL for a never-set variable instead of raising. PARALLEL SAFE: custom
--    settings are copied to parallel workers.
--    (CREATE OR REPLACE also converts the 1.0 PL/pgSQL version in place:
--    same name, arguments and return type.)
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION current_tenant_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('app.current_tenant_id', true), '') $$;

COMMENT ON FUNCTION current_tenant_id() IS
    'pgvpd: value of app.current_tenant_id for this session; NULL when unset or empty (fail closed)';

-- ---------------------------------------------------------------------------
-- 3. Fail-closed casts for non-text tenant columns. A malformed context value
--    (say `app_user.not-a-uuid`) must give no rows, never an error: an error
--    would turn every query into a denial of service and leak the column type.
--    The regular expressions accept a subset of what the input functions
--    accept, so the cast after a match cannot fail. Plain SQL, IMMUTABLE and
--    not STRICT, so they inline into the policy expression too.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_try_uuid(v text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN v ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
        THEN v::uuid
    END
$$;

CREATE OR REPLACE FUNCTION pgvpd_try_bigint(v text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- 18 digits always fit in a bigint.
    SELECT CASE WHEN v ~ '^-?[0-9]{1,18}$' THEN v::bigint END
$$;

-- ---------------------------------------------------------------------------
-- 4a. Internals of the policy builders (pgvpd_protect here, pgvpd_protect_acl
--     in helpers.sql); `caller` names the builder in error messages.
--
--    pgvpd_table(target_table, caller): the table, resolved with to_regclass()
--    under the caller's search_path (schema-qualified and quoted names work).
--    For 1.0 compatibility (which quoted the whole argument as one
--    identifier) an unqualified mixed-case name that does not resolve is
--    retried as an exact identifier. Only ordinary and partitioned tables.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_table(target_table text, caller text)
RETURNS regclass
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    rel  regclass;
    kind "char";
BEGIN
    BEGIN
        rel := pg_catalog.to_regclass(target_table);
    EXCEPTION WHEN invalid_name OR syntax_error OR undefined_object THEN
        rel := NULL;  -- e.g. 'a.b.c.d': not a valid name; retried below
    END;
    IF rel IS NULL AND strpos(target_table, '.') = 0 THEN
        rel := pg_catalog.to_regclass(pg_catalog.quote_ident(target_table));
    END IF;
    IF rel IS NULL THEN
        RAISE EXCEPTION '%: table % does not exist', caller, target_table
            USING ERRCODE = 'undefined_table',
                  HINT = 'Use a schema-qualified name (schema.table) or check search_path.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '%: % is not a table (relkind %)', caller, rel, kind
            USING ERRCODE = 'wrong_object_type';
    END IF;
    RETURN rel;
END
$$;

-- ---------------------------------------------------------------------------
--    pgvpd_install_policy(rel, prefix, to_role, expr): enables and forces row
--    level security on `rel`, (re)creates the permissive policy
--    `<prefix><table>` FOR ALL TO `to_role` (PUBLIC or app_user) with `expr`
--    as both USING and WITH CHECK, and grants app_user DML on the table,
--    USAGE on its schema and USAGE, SELECT on the sequences owned by its
--    columns (serial), so inserts work. The name is shortened with an md5
--    suffix when it would exceed the 63-byte identifier limit (PostgreSQL
--    would otherwise truncate silently, and two long names could collide).
--    Returns the policy name.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_install_policy(rel regclass, prefix text, to_role text, expr text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    nsp name;
    tbl name;
    pol text;
    seq record;
BEGIN
    IF to_role NOT IN ('PUBLIC', 'app_user') THEN
        RAISE EXCEPTION 'pgvpd_install_policy: role % is not PUBLIC or app_user', to_role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT n.nspname, c.relname INTO nsp, tbl
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel;

    pol := prefix || tbl;
    IF octet_length(pol) > 63 THEN
        -- Keep whole characters: drop from the end until prefix + '_' + 8 hex fit.
        pol := left(pol, 54);
        WHILE octet_length(pol) > 54 LOOP
            pol := left(pol, -1);
        END LOOP;
        pol := pol || '_' || left(md5(prefix || tbl), 8);
    END IF;

    EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', nsp, tbl);
    EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', nsp, tbl);
    EXECUTE format('DROP POLICY IF EXISTS %I ON %I.%I', pol, nsp, tbl);
    EXECUTE format(
        'CREATE POLICY %I ON %I.%I AS PERMISSIVE FOR ALL TO %s USING (%s) WITH CHECK (%s)',
        pol, nsp, tbl, to_role, expr, expr);

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO app_user', nsp);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO app_user', nsp, tbl);
    FOR seq IN
        SELECT s.oid::regclass AS seqname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.classid = 'pg_catalog.pg_class'::regclass
          AND d.refclassid = 'pg_catalog.pg_class'::regclass
          AND d.refobjid = rel AND d.deptype = 'a'
    LOOP
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO app_user', seq.seqname);
    END LOOP;
    RETURN pol;
END
$$;

-- ---------------------------------------------------------------------------
-- 4. pgvpd_protect(table, tenant_column): turn on tenant isolation for a table.
--
--    * target_table may be schema-qualified and/or quoted ('billing.invoices',
--      '"MyTable"'); it is resolved with to_regclass() under the caller's
--      search_path. For 1.0 compatibility (which quoted the whole argument as
--      one identifier) an unqualified mixed-case name that does not resolve
--      is retried as an exact identifier.
--    * tenant_column is an exact column name (as in 1.0). Supported types:
--      text/varchar/char, uuid, smallint/integer/bigint. Missing table or
--      column, or another type, is an error that names it.
--    * ENABLE and FORCE row level security: FORCE makes the policy apply to
--      the table owner too (superusers and BYPASSRLS roles always bypass RLS;
--      pgvpd refuses those).
--    * One policy FOR ALL TO PUBLIC, USING and WITH CHECK identical, so rows
--      can be neither read nor written outside the tenant. TO PUBLIC (1.0 used
--      TO app_user) covers every role, including a `set_role` target; a
--      session without context sees and writes nothing.
--    * The right-hand side is wrapped in a scalar sub-select,
--      `col = (SELECT current_tenant_id())`: PostgreSQL evaluates it once per
--      query as an init-plan and compares the column with a constant, so an
--      index on the tenant column is usable.
--    * Policy name `pgvpd_tenant_isolation_<table>` as in 1.0, truncated with a
--      short md5 suffix when it would exceed the 63-byte identifier limit
--      (PostgreSQL would otherwise truncate silently, and two long names could
--      collide). An existing policy of that name is dropped first.
--    * Grants SELECT, INSERT, UPDATE, DELETE on the table to app_user, USAGE
--      on its schema, and USAGE, SELECT on sequences owned by its columns
--      (serial), so inserts work.
--    * SECURITY INVOKER: the caller needs the rights to ALTER the table.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_protect(target_table text, tenant_column text DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    rel        regclass;
    coltype    regtype;
    rhs        text;
    pol        text;
BEGIN
    IF target_table IS NULL OR tenant_column IS NULL THEN
        RAISE EXCEPTION 'pgvpd_protect: table and column must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    rel := pgvpd_table(target_table, 'pgvpd_protect');

    SELECT a.atttypid::regtype INTO coltype
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = rel AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF coltype IS NULL THEN
        RAISE EXCEPTION 'pgvpd_protect: column % does not exist in table %', tenant_column, rel
            USING ERRCODE = 'undefined_column';
    END IF;

    -- Domains over a supported type compare like their base type.
    SELECT COALESCE(NULLIF(t.typbasetype, 0), t.oid)::regtype INTO coltype
    FROM pg_catalog.pg_type t WHERE t.oid = coltype;

    rhs := CASE coltype
        WHEN 'text'::regtype              THEN '(SELECT current_tenant_id())'
        WHEN 'character varying'::regtype THEN '(SELECT current_tenant_id())'
        WHEN 'character'::regtype         THEN '(SELECT current_tenant_id())'
        WHEN 'uuid'::regtype              THEN '(SELECT pgvpd_try_uuid(current_tenant_id()))'
        WHEN 'smallint'::regtype          THEN '(SELECT pgvpd_try_bigint(current_tenant_id()))'
        WHEN 'integer'::regtype           THEN '(SELECT pgvpd_try_bigint(current_tenant_id()))'
        WHEN 'bigint'::regtype            THEN '(SELECT pgvpd_try_bigint(current_tenant_id()))'
    END;
    IF rhs IS NULL THEN
        RAISE EXCEPTION 'pgvpd_protect: column %.% has type %, supported: text, varchar, char, uuid, smallint, integer, bigint',
            rel, tenant_column, coltype
            USING ERRCODE = 'feature_not_supported';
    END IF;

    pol := pgvpd_install_policy(rel, 'pgvpd_tenant_isolation_', 'PUBLIC',
                                format('%I = %s', tenant_column, rhs));

    RAISE NOTICE 'pgvpd: protected % on column % (%): policy %', rel, tenant_column, coltype, pol;
END
$$;

COMMENT ON FUNCTION pgvpd_protect(text, text) IS
    'pgvpd: enable+force RLS on a table with a tenant policy on the given column (text, uuid or integer)';

-- ---------------------------------------------------------------------------
-- 5. pgvpd_status(): RLS state of every ordinary and partitioned table in all
--    non-system schemas. Policies are counted by the table's oid (1.0 matched
--    by name, counting same-named tables of other schemas). The result gained
--    a schema_name column, so the 1.0 function is dropped and re-created
--    (CREATE OR REPLACE cannot change a result type).
-- ---------------------------------------------------------------------------
DROP FUNCTION IF EXISTS pgvpd_status();
CREATE FUNCTION pgvpd_status()
RETURNS TABLE (schema_name text, table_name text, rls_enabled boolean, rls_forced boolean, policy_count bigint)
LANGUAGE sql STABLE
AS $$
    SELECT n.nspname::text,
           c.relname::text,
           c.relrowsecurity,
           c.relforcerowsecurity,
           (SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname <> 'information_schema'
      AND n.nspname NOT LIKE 'pg\_%'
    ORDER BY 1, 2
$$;

COMMENT ON FUNCTION pgvpd_status() IS
    'pgvpd: RLS enabled/forced and policy count of every user table';

-- ---------------------------------------------------------------------------
-- 6. As in 1.0: sequences already in schema public are usable by app_user
--    (tables protected later get their own sequences granted by pgvpd_protect).
-- ---------------------------------------------------------------------------
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app_user;

DO $$
BEGIN
    RAISE NOTICE 'pgvpd: setup done. Next: SELECT pgvpd_protect(''my_table'') for each tenant table '
        '(schema.table and uuid/integer tenant columns work), then SELECT * FROM pgvpd_status(), '
        'and connect through pgvpd as app_user.<tenant>.';
END
$$;
