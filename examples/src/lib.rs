//! edge-examples: runnable examples for edge-broker users (see `examples/README.md`).
