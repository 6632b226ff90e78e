//! HTTP/JSON gateway (being built).
