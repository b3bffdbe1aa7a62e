-- pgvpd SQL kit, part 2: context accessors and the ACL policy builder.
--
-- Requires sql/setup.sql (it defines pgvpd_try_uuid(), pgvpd_table() and
-- pgvpd_install_policy(), used here); run it
-- first, as the same user:
--     psql -v ON_ERROR_STOP=1 -f sql/setup.sql -f sql/helpers.sql
--
-- Idempotent: every statement can be re-run. Re-running upgrades a pgvpd 1.0
-- installation in place: the five accessors keep 1.0's names, argument names
-- and types and return types (CREATE OR REPLACE, so policies that already call
-- them keep working and pick up the new bodies), and pgvpd_protect_acl(text,
-- jsonb) keeps its signature.
--
-- What changed from 1.0 (see docs/policies.md):
--   * Lists are parsed, not just split: `a,b`, `a, b` and `{a,b}` (PostgreSQL's
--     array output, as produced by `array_agg(x)::text` in a resolver) give the
--     same array; a malformed value gives NULL (no match), never an error.
--   * pgvpd_context_uuid_array() drops an element that is not a uuid (1.0
--     raised an error for the whole query); the *_contains() functions return
--     false, never NULL and never an error.
--   * Every accessor is plain LANGUAGE sql, STABLE, PARALLEL SAFE, SECURITY
--     INVOKER, with no SET clause and no exception block; all but
--     pgvpd_context_uuid_array() (a sub-select, meant to run once per query)
--     are single expressions that the planner inlines.
--   * pgvpd_protect_acl() quotes identifiers, accepts schema-qualified tables,
--     validates variable names, reads each variable once per query (init-plan
--     form) and no longer splices the `when` key as raw SQL.
--
-- The accessors and the policies refer to each other by unqualified name:
-- install both files in a schema that is on the search_path of the
-- application role (public by default), as 1.0 did.

\set ON_ERROR_STOP 1

DO $$
BEGIN
    IF pg_catalog.to_regprocedure('pgvpd_try_uuid(text)') IS NULL
       OR pg_catalog.to_regprocedure('pgvpd_install_policy(regclass,text,text,text)') IS NULL THEN
        RAISE EXCEPTION 'pgvpd helpers.sql: pgvpd_try_uuid(text) or pgvpd_install_policy() not found'
            USING HINT = 'Run sql/setup.sql first (same database, same search_path).';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- 1. pgvpd_context(var_name): the value of a context variable, NULL when the
--    variable was never set in this session or is empty (pgvpd sets a missing
--    resolver result to ''). current_setting(..., true) returns NULL instead
--    of raising for an unknown name. Meant for custom `prefix.name` variables;
--    reading a built-in setting works as current_setting() does (including
--    its permission errors for the few superuser-only settings).
--
--    STABLE, not IMMUTABLE: the value changes between statements (SET,
--    set_config, a pooled server lent to another tenant), and an IMMUTABLE
--    call with constant arguments would be folded into a cached plan once.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_context(var_name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$ SELECT NULLIF(pg_catalog.current_setting(var_name, true), '') $$;

COMMENT ON FUNCTION pgvpd_context(text) IS
    'pgvpd: value of a context variable; NULL when unset or empty (fail closed)';

-- ---------------------------------------------------------------------------
-- 2. pgvpd_split_list(list): the parser behind the list accessors (new in
--    this version; usable on its own). Never raises. Whitespace below means
--    ASCII space, tab, CR, LF, FF, VT.
--
--    * NULL                        -> NULL
--    * plain form `a, b,,c`        -> {a,b,c}: split on commas, whitespace
--      around each element trimmed, empty elements dropped. Quotes, braces
--      and backslashes inside are ordinary characters.
--    * braced form `{...}`, i.e. the value starts with `{` or ends with `}`
--      (after trimming whitespace):
--        - valid one-dimensional PostgreSQL array literal (what array_out
--          prints: `{a,"b,c","d \"e\"",NULL}`) -> parsed with PostgreSQL's own
--          rules (quotes, backslash escapes, whitespace around unquoted
--          elements trimmed, quoted elements kept verbatim); NULL elements
--          (unquoted NULL) and empty elements dropped;
--        - otherwise, when the inside holds no `"`, `\`, `{` or `}`: split
--          like the plain form (so `{a,,b}` and `{a, b,}` work);
--        - otherwise (unbalanced quotes, nested braces, `{a`, ...) -> NULL.
--    * no element left (`,` or `{}`) -> '{}' (an empty array; matches nothing).
--
--    The regular expression guarding the cast to text[] accepts only a subset
--    of what array_in accepts (one dimension, no dimension decoration,
--    explicit ASCII whitespace rather than the locale's \s), so the cast
--    cannot fail. A single SQL expression (no sub-select), hence inlinable.
--    STABLE because the text -> text[] cast (array_in) is.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_split_list(list text) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN list ~ '^[ \t\n\r\f\v]*\{|\}[ \t\n\r\f\v]*$' THEN
            CASE
                -- ws { ws [ elem ws ( , ws elem ws )* ] } ws, where elem is
                -- "quoted (\x escapes allowed)" or an unquoted run without
                -- quotes, braces, backslashes or commas that neither starts
                -- nor ends with whitespace.
                WHEN list ~ ('^[ \t\n\r\f\v]*\{[ \t\n\r\f\v]*'
                             '(?:(?:"(?:[^"\\]|\\.)*"|[^"{}\\, \t\n\r\f\v](?:[^"{}\\,]*[^"{}\\, \t\n\r\f\v])?)[ \t\n\r\f\v]*'
                             '(?:,[ \t\n\r\f\v]*(?:"(?:[^"\\]|\\.)*"|[^"{}\\, \t\n\r\f\v](?:[^"{}\\,]*[^"{}\\, \t\n\r\f\v])?)[ \t\n\r\f\v]*)*)?'
                             '\}[ \t\n\r\f\v]*$')
                THEN pg_catalog.array_remove(pg_catalog.array_remove(list::text[], NULL), '')
                WHEN list ~ '^[ \t\n\r\f\v]*\{[^"\\{}]*\}[ \t\n\r\f\v]*$'
                THEN pg_catalog.array_remove(
                         pg_catalog.regexp_split_to_array(
                             pg_catalog.btrim(list, E' \t\n\r\f\x0b{}'),
                             '[ \t\n\r\f\v]*,[ \t\n\r\f\v]*'),
                         '')
            END
        ELSE pg_catalog.array_remove(
                 pg_catalog.regexp_split_to_array(
                     pg_catalog.btrim(list, E' \t\n\r\f\x0b'),
                     '[ \t\n\r\f\v]*,[ \t\n\r\f\v]*'),
                 '')
    END
$$;

COMMENT ON FUNCTION pgvpd_split_list(text) IS
    'pgvpd: parse `a,b` or `{a,b}` (array literal) into text[]; empty elements dropped; NULL when malformed';

-- ---------------------------------------------------------------------------
-- 3. pgvpd_context_array(var_name): the variable parsed as a list (section 2).
--    NULL when unset, empty or malformed.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_context_array(var_name text) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$ SELECT pgvpd_split_list(pgvpd_context(var_name)) $$;

COMMENT ON FUNCTION pgvpd_context_array(text) IS
    'pgvpd: context variable as text[] (`a,b` or `{a,b}`); NULL when unset, empty or malformed';

-- ---------------------------------------------------------------------------
-- 4. pgvpd_context_uuid_array(var_name): the list as uuid[], keeping only the
--    elements written the way PostgreSQL prints a uuid: 8-4-4-4-12 hex
--    digits, either case (what `array_agg(uuid_col)::text` produces). Other
--    elements -- malformed, hyphen-less, braced -- are dropped: they match
--    nothing and never raise (1.0 raised an error for the whole query). The
--    pattern is a subset of what uuid_in accepts, so the cast cannot fail.
--    NULL when the variable is unset, empty or malformed (section 2); '{}'
--    when no element is a uuid.
--
--    Not inlinable (it has a sub-select), which does not matter where it is
--    meant to be used: once per query, as in
--      owner_id = ANY ((SELECT pgvpd_context_uuid_array('app.ids'))::uuid[])
--    Per-row tests should use pgvpd_context_contains(), which inlines.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_context_uuid_array(var_name text) RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$
    SELECT CASE WHEN l IS NOT NULL THEN
        ARRAY(SELECT e::uuid
              FROM pg_catalog.unnest(l) WITH ORDINALITY AS u(e, i)
              WHERE e ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              ORDER BY i)
    END
    FROM pgvpd_split_list(pg_catalog.lower(pgvpd_context(var_name))) AS s(l)
$$;

COMMENT ON FUNCTION pgvpd_context_uuid_array(text) IS
    'pgvpd: context variable as uuid[] (8-4-4-4-12 elements; others dropped); NULL when unset, empty or malformed';

-- ---------------------------------------------------------------------------
-- 5. Membership tests: true when val is in the list, false otherwise --
--    including an unset variable, a malformed list and a NULL val (never NULL,
--    never an error). Both are single expressions, so they inline into the
--    calling query (no function call per row); the list is still parsed once
--    per row, so a policy over many rows should compare the column with the
--    init-plan array instead, as pgvpd_protect_acl() does.
--
--    pgvpd_context_contains() matches the same elements that
--    pgvpd_context_uuid_array() keeps: it compares the canonical text of val
--    (uuid_out: lower case 8-4-4-4-12) with the lower-cased list, which needs
--    no cast of the list and so cannot fail.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_context_contains(var_name text, val uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$
    SELECT COALESCE(val::text = ANY (pgvpd_split_list(pg_catalog.lower(pgvpd_context(var_name)))), false)
$$;

COMMENT ON FUNCTION pgvpd_context_contains(text, uuid) IS
    'pgvpd: is val in the uuid list held by the context variable; false when unset or malformed';

CREATE OR REPLACE FUNCTION pgvpd_context_text_contains(var_name text, val text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
AS $$ SELECT COALESCE(val = ANY (pgvpd_context_array(var_name)), false) $$;

COMMENT ON FUNCTION pgvpd_context_text_contains(text, text) IS
    'pgvpd: is val in the text list held by the context variable; false when unset or malformed';

-- ---------------------------------------------------------------------------
-- 6. pgvpd_protect_acl(table, paths [, trust_raw_when]): one policy granting
--    access to a row when ANY of several "paths" matches.
--
--    paths is a non-empty JSON array of objects with exactly these keys:
--      "column"  an existing column of the table (exact name, any characters)
--      "var"     a context variable, `prefix.name` ([A-Za-z_][A-Za-z0-9_]*
--                then `.` then [A-Za-z0-9_.]+)
--      "type"    how the column is compared with the variable:
--                  text        column = the value           (text/varchar/char column)
--                  uuid        column = the value as uuid   (uuid column; malformed -> no match)
--                  uuid_array  column = ANY (the uuid list) (uuid column)
--                  text_array  column = ANY (the text list) (text/varchar/char column)
--      "when"    optional extra condition on the context, ANDed to the path:
--                  {"var": "app.org_role", "op": "=", "value": "admin"}
--                  ops: "=" (default), "<>" (or "!="), "in" with a non-empty
--                  array of strings as value. An unset variable makes the
--                  condition false for every op.
--                or, for 1.0 compatibility, a string of exactly the shape
--                  pgvpd_context('<var>') = '<literal>'   (or <>, !=)
--                with any whitespace around the tokens. Anything else is
--                refused -- unless the caller passes trust_raw_when => true,
--                in which case such a string is used as raw SQL, as 1.0 did.
--                Only do that with text you wrote yourself.
--
--    Each context read is a scalar sub-select, e.g.
--      owner_id = (SELECT pgvpd_try_uuid(pgvpd_context('app.user_id')))
--      id = ANY ((SELECT pgvpd_context_uuid_array('app.case_ids'))::uuid[])
--    which PostgreSQL evaluates once per query (an InitPlan), leaving the
--    column compared with a constant: indexes on the column are usable.
--
--    The table: ENABLE + FORCE row level security; policy
--    `pgvpd_acl_<table>` (shortened with an md5 suffix beyond 63 bytes), AS
--    PERMISSIVE FOR ALL TO app_user, USING and WITH CHECK identical, dropped
--    and re-created on every call; SELECT, INSERT, UPDATE, DELETE granted to
--    app_user, with USAGE on the schema and on column-owned sequences.
--    Permissive policies are ORed: a WARNING names any other permissive
--    policy already on the table (e.g. the one of pgvpd_protect()).
--
--    Errors (SQLSTATE 22023 unless noted) name the path (1-based) and the
--    offending key; nothing is changed when any path is invalid.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgvpd_protect_acl(target_table text, paths jsonb, trust_raw_when boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    guc_re   constant text := '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_.]+$';
    -- The 1.0 string form of `when`: pgvpd_context('<var>') <op> '<literal>'.
    when_re  constant text :=
        '^[ \t\n\r\f\v]*pgvpd_context[ \t\n\r\f\v]*\([ \t\n\r\f\v]*''([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_.]+)''[ \t\n\r\f\v]*\)'
        '[ \t\n\r\f\v]*(=|<>|!=)[ \t\n\r\f\v]*''((?:[^'']|'''')*)''[ \t\n\r\f\v]*$';
    rel      regclass;
    nsp      name;
    tbl      name;
    path     jsonb;
    n        integer := 0;
    k        text;
    col      text;
    var      text;
    typ      text;
    coltype  regtype;
    branch   text;
    cond     jsonb;
    cond_sql text;
    m        text[];
    op       text;
    vals     text[];
    branches text[] := '{}';
    expr     text;
    pol      text;
    others   text;
BEGIN
    IF target_table IS NULL OR paths IS NULL OR trust_raw_when IS NULL THEN
        RAISE EXCEPTION 'pgvpd_protect_acl: table, paths and trust_raw_when must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    rel := pgvpd_table(target_table, 'pgvpd_protect_acl');
    SELECT n.nspname, c.relname INTO nsp, tbl
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel;

    IF jsonb_typeof(paths) <> 'array' THEN
        RAISE EXCEPTION 'pgvpd_protect_acl: paths must be a JSON array of objects, got %', jsonb_typeof(paths)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(paths) = 0 THEN
        RAISE EXCEPTION 'pgvpd_protect_acl: paths array is empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR path IN SELECT e FROM jsonb_array_elements(paths) AS e LOOP
        n := n + 1;
        IF jsonb_typeof(path) <> 'object' THEN
            RAISE EXCEPTION 'pgvpd_protect_acl: path %: must be a JSON object, got %', n, jsonb_typeof(path)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR k IN SELECT jsonb_object_keys(path) LOOP
            IF k NOT IN ('column', 'var', 'type', 'when') THEN
                RAISE EXCEPTION 'pgvpd_protect_acl: path %: unknown key "%"', n, k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Keys: column, var, type, when.';
            END IF;
        END LOOP;
        FOREACH k IN ARRAY ARRAY['column', 'var', 'type'] LOOP
            IF jsonb_typeof(path -> k) IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION 'pgvpd_protect_acl: path %: "%" is required and must be a string', n, k
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        col := path ->> 'column';
        var := path ->> 'var';
        typ := path ->> 'type';

        IF var !~ guc_re THEN
            RAISE EXCEPTION 'pgvpd_protect_acl: path %: invalid variable name %', n, pg_catalog.quote_literal(var)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A context variable is prefix.name: letters, digits and _ (e.g. app.user_id).';
        END IF;
        IF typ NOT IN ('text', 'uuid', 'uuid_array', 'text_array') THEN
            RAISE EXCEPTION 'pgvpd_protect_acl: path %: unknown type %', n, pg_catalog.quote_literal(typ)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Types: text, uuid, uuid_array, text_array.';
        END IF;

        coltype := NULL;
        SELECT a.atttypid::regtype INTO coltype
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF coltype IS NULL THEN
            RAISE EXCEPTION 'pgvpd_protect_acl: path %: column % does not exist in table %',
                n, pg_catalog.quote_ident(col), rel
                USING ERRCODE = 'undefined_column';
        END IF;
        SELECT COALESCE(NULLIF(t.typbasetype, 0), t.oid)::regtype INTO coltype
        FROM pg_catalog.pg_type t WHERE t.oid = coltype;
        IF typ IN ('uuid', 'uuid_array') AND coltype <> 'uuid'::regtype
           OR typ IN ('text', 'text_array')
              AND coltype NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
            RAISE EXCEPTION 'pgvpd_protect_acl: path %: column % has type %, type % needs a % column',
                n, pg_catalog.quote_ident(col), coltype, typ,
                CASE WHEN typ LIKE 'uuid%' THEN 'uuid' ELSE 'text, varchar or char' END
                USING ERRCODE = 'datatype_mismatch';
        END IF;

        branch := CASE typ
            WHEN 'text'       THEN format('%I = (SELECT pgvpd_context(%L))', col, var)
            WHEN 'uuid'       THEN format('%I = (SELECT pgvpd_try_uuid(pgvpd_context(%L)))', col, var)
            WHEN 'uuid_array' THEN format('%I = ANY ((SELECT pgvpd_context_uuid_array(%L))::uuid[])', col, var)
            WHEN 'text_array' THEN format('%I = ANY ((SELECT pgvpd_context_array(%L))::text[])', col, var)
        END;

        IF path ? 'when' THEN
            cond := path -> 'when';
            cond_sql := NULL;
            IF jsonb_typeof(cond) = 'string' THEN
                m := regexp_match(cond #>> '{}', when_re);
                IF m IS NOT NULL THEN
                    -- Rewritten into the structured form below.
                    cond := jsonb_build_object('var', m[1], 'op', m[2], 'value', replace(m[3], '''''', ''''));
                ELSIF trust_raw_when THEN
                    cond_sql := format('(%s)', cond #>> '{}');
                ELSE
                    RAISE EXCEPTION 'pgvpd_protect_acl: path %: "when" is not a recognised condition: %',
                        n, cond #>> '{}'
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Use {"var": "app.x", "op": "=", "value": "v"} (ops =, <>, in) or '
                                     'pgvpd_context(''app.x'') = ''v''. Raw SQL is only taken with '
                                     'trust_raw_when => true.';
                END IF;
            ELSIF jsonb_typeof(cond) IS DISTINCT FROM 'object' THEN
                RAISE EXCEPTION 'pgvpd_protect_acl: path %: "when" must be an object or a string, got %',
                    n, jsonb_typeof(cond)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;

            IF cond_sql IS NULL THEN
                FOR k IN SELECT jsonb_object_keys(cond) LOOP
                    IF k NOT IN ('var', 'op', 'value') THEN
                        RAISE EXCEPTION 'pgvpd_protect_acl: path %: unknown key "%" in "when"', n, k
                            USING ERRCODE = 'invalid_parameter_value',
                                  HINT = 'Keys of "when": var, op, value.';
                    END IF;
                END LOOP;
                IF jsonb_typeof(cond -> 'var') IS DISTINCT FROM 'string' OR cond ->> 'var' !~ guc_re THEN
                    RAISE EXCEPTION 'pgvpd_protect_acl: path %: "when" needs "var", a variable name such as app.role, got %',
                        n, COALESCE((cond -> 'var')::text, 'nothing')
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF cond ? 'op' AND jsonb_typeof(cond -> 'op') IS DISTINCT FROM 'string' THEN
                    RAISE EXCEPTION 'pgvpd_protect_acl: path %: "op" of "when" must be a string', n
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                op := lower(COALESCE(cond ->> 'op', '='));
                IF op = '!=' THEN
                    op := '<>';
                END IF;
                IF op IN ('=', '<>') THEN
                    IF jsonb_typeof(cond -> 'value') IS DISTINCT FROM 'string' THEN
                        RAISE EXCEPTION 'pgvpd_protect_acl: path %: "value" of "when" must be a string for op %', n, op
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    cond_sql := format('(SELECT pgvpd_context(%L)) %s %L', cond ->> 'var', op, cond ->> 'value');
                ELSIF op = 'in' THEN
                    IF jsonb_typeof(cond -> 'value') IS DISTINCT FROM 'array'
                       OR jsonb_array_length(cond -> 'value') = 0
                       OR EXISTS (SELECT 1 FROM jsonb_array_elements(cond -> 'value') AS v
                                  WHERE jsonb_typeof(v) <> 'string') THEN
                        RAISE EXCEPTION 'pgvpd_protect_acl: path %: "value" of "when" must be a non-empty array of strings for op in', n
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    SELECT array_agg(format('%L', v) ORDER BY i) INTO vals
                    FROM jsonb_array_elements_text(cond -> 'value') WITH ORDINALITY AS t(v, i);
                    cond_sql := format('(SELECT pgvpd_context(%L)) IN (%s)',
                                       cond ->> 'var', array_to_string(vals, ', '));
                ELSE
                    RAISE EXCEPTION 'pgvpd_protect_acl: path %: unknown op % in "when"', n, pg_catalog.quote_literal(op)
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Ops: =, <>, in.';
                END IF;
            END IF;
            branch := format('%s AND %s', branch, cond_sql);
        END IF;

        branches := branches || format('(%s)', branch);
    END LOOP;

    expr := array_to_string(branches, ' OR ');

    pol := pgvpd_install_policy(rel, 'pgvpd_acl_', 'app_user', expr);

    SELECT string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname) INTO others
    FROM pg_catalog.pg_policy p
    WHERE p.polrelid = rel AND p.polpermissive AND p.polname <> pol;
    IF others IS NOT NULL THEN
        RAISE WARNING 'pgvpd_protect_acl: %.% also has the permissive policies %; PostgreSQL ORs them with %',
            nsp, tbl, others, pol
            USING HINT = 'A row visible through any of them is visible. Make the others AS RESTRICTIVE '
                         'to require both (see docs/policies.md).';
    END IF;

    RAISE NOTICE 'pgvpd: protected %.% with % ACL path(s): policy %', nsp, tbl, n, pol;
END
$$;

COMMENT ON FUNCTION pgvpd_protect_acl(text, jsonb, boolean) IS
    'pgvpd: enable+force RLS with one policy ORing ACL paths (column/var/type/when); raw SQL in "when" only when trust_raw_when';

-- The 1.0 signature: same as above with raw SQL in "when" refused.
CREATE OR REPLACE FUNCTION pgvpd_protect_acl(target_table text, paths jsonb)
RETURNS void
LANGUAGE sql
AS $$ SELECT pgvpd_protect_acl(target_table, paths, false) $$;

COMMENT ON FUNCTION pgvpd_protect_acl(text, jsonb) IS
    'pgvpd: pgvpd_protect_acl(table, paths, trust_raw_when => false)';
