//! NATS client protocol codec (filled in by the NATS issue).
