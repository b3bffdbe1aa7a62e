-- Fixtures of the integration suite; run as superuser after sql/setup.sql and
-- sql/helpers.sql (tests/common/fixtures.rs loads all three).
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

-- Resolver fixtures, as in pgvpd 1.0's suite: the test user is an active admin
-- of org 1111... and an inactive viewer of org 9999... (a resolver selecting
-- active memberships finds exactly one row). Resolvers read these tables, so
-- app_user may SELECT them; they are not row-protected.
DROP TABLE IF EXISTS org_memberships, team_memberships, teams CASCADE;
CREATE TABLE org_memberships (
    user_id   uuid    NOT NULL,
    org_id    uuid    NOT NULL,
    role      text    NOT NULL,
    is_active boolean NOT NULL DEFAULT true
);
INSERT INTO org_memberships (user_id, org_id, role, is_active) VALUES
    ('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', '11111111-2222-3333-4444-555555555555', 'admin',  true),
    ('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', '99999999-9999-9999-9999-999999999999', 'viewer', false);
CREATE TABLE teams (
    id     uuid PRIMARY KEY,
    org_id uuid NOT NULL,
    name   text NOT NULL
);
INSERT INTO teams (id, org_id, name) VALUES
    ('cccccccc-0000-0000-0000-000000000001', '11111111-2222-3333-4444-555555555555', 'Platform'),
    ('cccccccc-0000-0000-0000-000000000002', '11111111-2222-3333-4444-555555555555', 'Support');
CREATE TABLE team_memberships (
    user_id uuid NOT NULL,
    team_id uuid NOT NULL REFERENCES teams (id)
);
INSERT INTO team_memberships (user_id, team_id) VALUES
    ('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', 'cccccccc-0000-0000-0000-000000000001'),
    ('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', 'cccccccc-0000-0000-0000-000000000002');
GRANT SELECT ON org_memberships, team_memberships, teams TO app_user;

-- ACL fixture for pgvpd_protect_acl (the tests protect it themselves): one
-- case created by the test user in org 1111..., one by someone else in the
-- same org, one by someone else in org 9999...
DROP TABLE IF EXISTS acl_cases CASCADE;
CREATE TABLE acl_cases (
    id         uuid PRIMARY KEY,
    title      text NOT NULL,
    creator_id uuid NOT NULL,
    org_id     uuid NOT NULL
);
INSERT INTO acl_cases (id, title, creator_id, org_id) VALUES
    ('aaaaaaaa-0000-0000-0000-000000000001', 'Case owned by test user',
     'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', '11111111-2222-3333-4444-555555555555'),
    ('aaaaaaaa-0000-0000-0000-000000000002', 'Case by colleague in same org',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb', '11111111-2222-3333-4444-555555555555'),
    ('aaaaaaaa-0000-0000-0000-000000000003', 'Case in other org',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb', '99999999-9999-9999-9999-999999999999');
