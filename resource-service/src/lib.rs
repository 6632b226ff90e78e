//! Person records over gRPC (being built).
