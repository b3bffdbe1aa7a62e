//! Loads the SQL kit (`sql/setup.sql`, `sql/helpers.sql`) and the suite's data
//! (`tests/fixtures.sql`).

use super::cluster::Cluster;
use super::util::repo_root;

/// Password of `app_user` after the fixtures (setup.sql alone sets `changeme`).
pub const APP_PASSWORD: &str = "testpass";
pub const MD5_PASSWORD: &str = "md5pass";
pub const PW_PASSWORD: &str = "pwpass";
pub const DASH_PASSWORD: &str = "dashpass";
pub const BYPASS_PASSWORD: &str = "bypasspass";
/// Tenants of the uuid-keyed `docs` table.
pub const UUID_A: &str = "11111111-1111-1111-1111-111111111111";
pub const UUID_B: &str = "22222222-2222-2222-2222-222222222222";
/// The database every case uses.
pub const DB: &str = "postgres";

pub fn setup_sql_path() -> std::path::PathBuf {
    repo_root().join("sql/setup.sql")
}

pub fn helpers_sql_path() -> std::path::PathBuf {
    repo_root().join("sql/helpers.sql")
}

pub fn fixtures_sql_path() -> std::path::PathBuf {
    repo_root().join("tests/fixtures.sql")
}

/// Runs `sql/setup.sql`, `sql/helpers.sql` then `tests/fixtures.sql` as superuser.
pub fn load(cluster: &Cluster) {
    cluster.sql_file(&setup_sql_path());
    cluster.sql_file(&helpers_sql_path());
    cluster.sql_file(&fixtures_sql_path());
}
