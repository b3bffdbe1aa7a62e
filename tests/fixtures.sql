-- Fixtures of the integration suite; run as superuser after sql/setup.sql.
-- Idempotent (tables are re-created, roles created or updated).

\set ON_ERROR_STOP 1

-- Roles. All NOSUPERUSER; only bypass_user has BYPASSRLS (the proxy must refuse it).
-- pg_hba (tests/common/cluster.rs): md5_user → md5, pw_user and bypass_user →
-- password (cleartext), trust_user → trust, everyone else → scram-sha-256.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('app_user',    'testpass',   'NOBYPASSRLS'),
        ('pw_user',     'pwpass',     'NOBYPASSRLS'),
        ('trust_user',  NULL,         'NOBYPASSRLS'),
        ('app-dash',    'dashpass',   'NOBYPASSRLS'),
        ('bypass_user', 'bypasspass', 'BYPASSRLS')
    ) AS t(name, pw, rls)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r.name);
        END IF;
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER %s PASSWORD %L', r.name, r.rls, r.pw);
    END LOOP;
END
$$;

-- The md5 verifier must be stored as md5, else the server silently uses SCRAM.
SET password_encryption = 'md5';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'md5_user') THEN
        CREATE ROLE md5_user LOGIN;
    END IF;
    ALTER ROLE md5_user LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'md5pass';
END
$$;
RESET password_encryption;

-- set_role_override logs in as trust_user and lets the proxy SET ROLE app_user.
GRANT app_user TO trust_user;

-- Tenants (text key), as in pgvpd 1.0's fixtures.
DROP TABLE IF EXISTS tenants CASCADE;
CREATE TABLE tenants (
    id        serial PRIMARY KEY,
    tenant_id text NOT NULL,
    name      text NOT NULL
);
INSERT INTO tenants (tenant_id, name) VALUES
    ('tenant_a', 'Alice Corp'),
    ('tenant_a', 'Alice LLC'),
    ('tenant_b', 'Bob Inc'),
    ('tenant_b', 'Bob Ltd');
SELECT pgvpd_protect('tenants');

-- uuid tenant key: a malformed context value must give no rows, not an error.
DROP TABLE IF EXISTS docs CASCADE;
CREATE TABLE docs (
    id        serial PRIMARY KEY,
    tenant_id uuid,
    title     text
);
INSERT INTO docs (tenant_id, title) VALUES
    ('11111111-1111-1111-1111-111111111111', 'A plan'),
    ('11111111-1111-1111-1111-111111111111', 'A report'),
    ('22222222-2222-2222-2222-222222222222', 'B memo');
SELECT pgvpd_protect('docs');

-- Schema-qualified table.
CREATE SCHEMA IF NOT EXISTS billing;
DROP TABLE IF EXISTS billing.invoices CASCADE;
CREATE TABLE billing.invoices (
    id        serial PRIMARY KEY,
    tenant_id varchar(64) NOT NULL,
    amount    integer NOT NULL
);
INSERT INTO billing.invoices (tenant_id, amount) VALUES
    ('tenant_a', 100),
    ('tenant_b', 200),
    ('tenant_b', 300);
SELECT pgvpd_protect('billing.invoices');

-- Privileges for every login role of the suite (pgvpd_protect granted app_user already).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['app_user', 'md5_user', 'pw_user', 'trust_user', 'app-dash', 'bypass_user']
    LOOP
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
        EXECUTE format('GRANT USAGE ON SCHEMA public, billing TO %I', r);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, docs, billing.invoices TO %I', r);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', r);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA billing TO %I', r);
    END LOOP;
END
$$;
