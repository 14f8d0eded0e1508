//! sea-orm entities and tenant-scoped repositories of Tributary (SQLite and PostgreSQL).
