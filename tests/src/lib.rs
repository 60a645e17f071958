//! edge-tests: helpers for end-to-end tests that run the real `edge-broker` binary against
//! real peers on 127.0.0.1 (see `tests/tests/`).

pub mod kafka;
