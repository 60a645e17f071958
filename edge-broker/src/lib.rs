//! edge-broker: the broker process.
