//! actix-web routes, auth, JSON API and pages of Tributary.
