//! The `edge-broker` binary.
fn main() {}
