//! End-to-end tests of Tributary live in `tests/`.
