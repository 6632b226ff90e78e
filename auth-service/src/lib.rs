//! auth-service (being built).
