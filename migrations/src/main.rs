//! The sea-orm migration CLI for Tributary's schema (`DATABASE_URL`, `up`, `down`, `status`, …).

#[tokio::main]
async fn main() {
    sea_orm_migration::cli::run_cli(tributary_migrations::Migrator).await;
}
