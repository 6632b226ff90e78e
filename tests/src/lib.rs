//! End-to-end test helpers (being built).
