//! edge-bridge: forwards records from an edge-log cursor to Kafka, in order, with batching,
//! routing, murmur2 partitioning, retries and backoff.
