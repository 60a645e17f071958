//! The bytes of large packets that clients are still sending: one pool per protocol,
//! `max_partial_packet_bytes_total`, shared by all its connections.
//!
//! A connection reads into a buffer of about one read chunk (8 KiB for MQTT, 64 KiB for NATS),
//! which the memory budget counts per connection. A larger packet is declared by its header
//! (MQTT's remaining length, a PUB's size) long before its last byte comes, and a client may
//! send the header and part of the bytes, then stop: 500 logged-in clients each holding most
//! of a 1 MiB packet held 500 MiB. So, as soon as the header is in and before the buffer
//! grows, a connection leases the packet's whole length from its protocol's pool
//! ([`InputLease::cover`]). The lease is given back once the packet is handled, or, if it
//! became a routed record, once the log has written the record
//! ([`crate::ingest::IngestQueue::keep_until_written`]): a full log under
//! `when_full = "block"` holds every connection's last record, and each could be such a
//! packet. And when the connection ends.
//!
//! Invariants:
//! - The bytes leased never exceed the pool's limit.
//! - A lease is all or nothing: the whole packet, taken at once. Two half-received packets
//!   therefore never wait on each other for the rest of their room.
//! - Nobody waits: a connection whose packet does not fit is refused at once (MQTT 5
//!   DISCONNECT 0x97 Quota exceeded; NATS closes without an `-ERR`, so that clients
//!   reconnect) and counted; its client may send the packet again later. Waiting would let
//!   clients that stopped mid-packet hold everyone else's large packets indefinitely.
//! - A connection's input holds at most one lease: the one for the packet at the front of its
//!   input, which is incomplete (a whole one is taken out as it is decoded,
//!   [`InputLease::take_whole`]). Its ingest queue may hold more, one per record not yet
//!   written.
//! - The read buffer of a leased packet is sized to hold it whole ([`InputLease::cover`]), so
//!   it does not grow again (doubling) on the way.
//! - A lease is held for a bounded time, not while its client trickles bytes: an MQTT
//!   packet's bytes do not move the keep-alive clock, so it must be whole within the
//!   keep-alive window (or 90 s without keep alive); a NATS client mid-PUB cannot answer
//!   the server's PINGs and is closed as stale.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;

use crate::config::ByteSize;

/// One protocol's pool of bytes for large packets in progress.
#[derive(Debug)]
pub struct InputPool {
    /// The setting's full name (`"mqtt.max_partial_packet_bytes_total"`), for refusals.
    field: &'static str,
    /// `max_partial_packet_bytes_total` (a reload changes it for new leases).
    limit: AtomicU64,
    /// Bytes leased now (the `edge_partial_packet_bytes` gauge reads the same counter).
    leased: Arc<AtomicU64>,
}

impl InputPool {
    /// A pool of `limit` bytes (the setting `field`) whose leases are counted in `leased`.
    pub fn new(field: &'static str, limit: ByteSize, leased: Arc<AtomicU64>) -> Arc<InputPool> {
        Arc::new(InputPool {
            field,
            limit: AtomicU64::new(limit.bytes()),
            leased,
        })
    }

    /// Applies a reloaded limit: leases taken before are kept.
    pub fn set_limit(&self, limit: ByteSize) {
        self.limit.store(limit.bytes(), Ordering::Relaxed);
    }

    /// Bytes leased now.
    pub fn leased(&self) -> u64 {
        self.leased.load(Ordering::Relaxed)
    }

    /// Leases `bytes`, all or nothing.
    fn try_lease(self: &Arc<Self>, bytes: u64) -> Option<Lease> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.leased
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |leased| {
                leased.checked_add(bytes).filter(|&after| after <= limit)
            })
            .ok()?;
        Some(Lease {
            pool: Arc::clone(self),
            bytes,
        })
    }
}

/// Bytes taken from an [`InputPool`], given back when dropped.
#[derive(Debug)]
struct Lease {
    pool: Arc<InputPool>,
    bytes: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.leased.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A packet that did not fit in its protocol's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The pool's setting.
    pub field: &'static str,
    /// The packet's whole length.
    pub packet: u64,
    /// Bytes the pool held: packets arriving, or waiting for the log to write them.
    pub leased: u64,
    /// The pool's limit.
    pub limit: u64,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a packet of {} does not fit in {} ({}): packets arriving or waiting for the log hold {}",
            ByteSize(self.packet),
            self.field,
            ByteSize(self.limit),
            ByteSize(self.leased)
        )
    }
}

/// A connection's lease on its pool: none, or one for the large packet at the front of its
/// input. Boxed: most connections never send a large packet, and the lease costs them a
/// pointer.
#[derive(Debug, Default)]
pub struct InputLease(Option<Box<Lease>>);

impl InputLease {
    /// Whether a large packet is arriving (its buffer is sized for it: leave it alone).
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// The lease, taken out, if its packet is whole in a buffer of `buffered` bytes: it is
    /// the first packet decoding will take. Its record (if it becomes one) keeps it until
    /// written ([`crate::ingest::IngestQueue::keep_until_written`]); otherwise it is dropped
    /// once the packet is handled. So a lease left here always stands for an incomplete packet
    /// at the front of the input.
    pub fn take_whole(&mut self, buffered: usize) -> InputLease {
        match &self.0 {
            Some(lease) if buffered as u64 >= lease.bytes => InputLease(self.0.take()),
            _ => InputLease(None),
        }
    }

    /// Makes the lease fit the input after decoding stopped for more bytes: `awaited` is the
    /// whole length of the packet at the front of `buf` if its header says so
    /// (`awaited_packet_len`, `awaited_op_len`). A packet of at most `chunk` bytes needs no
    /// lease; a larger one leases its length from `pool` (unless the lease held is its own),
    /// and `buf` is given room for all of it. [`Refused`] when the pool has no room.
    pub fn cover(
        &mut self,
        pool: &Arc<InputPool>,
        buf: &mut BytesMut,
        awaited: Option<usize>,
        chunk: usize,
    ) -> Result<(), Refused> {
        let Some(packet) = awaited.filter(|&len| len > chunk) else {
            self.0 = None;
            return Ok(());
        };
        let bytes = packet as u64;
        if self.0.as_ref().is_some_and(|lease| lease.bytes == bytes) {
            return Ok(());
        }
        // A lease of another length is not this packet's (it cannot be: a lease left here is
        // the front packet's, `take_whole`); given back before the new one is taken.
        self.0 = None;
        let lease = pool.try_lease(bytes).ok_or_else(|| Refused {
            field: pool.field,
            packet: bytes,
            leased: pool.leased(),
            limit: pool.limit.load(Ordering::Relaxed),
        })?;
        self.0 = Some(Box::new(lease));
        if buf.capacity() < packet {
            buf.reserve(packet - buf.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: u64) -> Arc<InputPool> {
        InputPool::new("x.pool", ByteSize(limit), Arc::new(AtomicU64::new(0)))
    }

    /// Model: connections cover, consume and drop in every order a small script makes;
    /// the pool's count is always the sum of the leases held and never above the limit,
    /// and a refusal happens exactly when the packet would not fit beside the others.
    #[test]
    fn the_pool_counts_exactly_the_leases_held_and_never_exceeds_its_limit() {
        let limit = 3 << 20;
        let pool = pool(limit);
        let mut connections: Vec<(InputLease, BytesMut)> =
            (0..5).map(|_| Default::default()).collect();
        // (connection, awaited length): the packet whole and decoded when awaited is None.
        let script: &[(usize, Option<usize>)] = &[
            (0, Some(1 << 20)),
            (1, Some(1 << 20)),
            (0, Some(1 << 20)), // its own lease again: nothing changes
            (2, Some(1 << 20)),
            (3, Some(100 << 10)), // refused: 3 MiB leased
            (4, Some(8 << 10)),   // at most a chunk: no lease needed
            (1, None),
            (3, Some(100 << 10)),
            (0, Some(512 << 10)), // the next packet, of another length
            (2, Some(1 << 20)),
            (4, Some(2 << 20)), // refused
        ];
        for &(i, awaited) in script {
            let held: u64 = connections
                .iter()
                .filter_map(|(lease, _)| lease.0.as_ref().map(|l| l.bytes))
                .sum();
            let (lease, buf) = &mut connections[i];
            let own = lease.0.as_ref().map_or(0, |l| l.bytes);
            let result = match awaited {
                None => {
                    drop(lease.take_whole(usize::MAX));
                    Ok(())
                }
                some => lease.cover(&pool, buf, some, 64 << 10),
            };
            let wanted = awaited.filter(|&a| a > 64 << 10).map_or(0, |a| a as u64);
            let fits = wanted == own || held - own + wanted <= limit;
            assert_eq!(result.is_ok(), fits, "{i} {awaited:?}: {result:?}");
            if let (Some(a), Ok(())) = (awaited, &result) {
                assert!(buf.capacity() >= a || a <= 64 << 10, "room for the packet");
            }
            let now: u64 = connections
                .iter()
                .filter_map(|(lease, _)| lease.0.as_ref().map(|l| l.bytes))
                .sum();
            assert_eq!(pool.leased(), now);
            assert!(now <= limit);
        }
        drop(connections);
        assert_eq!(
            pool.leased(),
            0,
            "dropping a connection gives its lease back"
        );
    }

    /// A refusal says how large the packet was and what held the pool, and a lowered limit
    /// (a reload) applies to the next lease only.
    #[test]
    fn a_refusal_names_the_packet_and_the_pool() {
        let pool = pool(1 << 20);
        let (mut a, mut b) = (InputLease::default(), InputLease::default());
        let mut buf = BytesMut::new();
        a.cover(&pool, &mut buf, Some(600 << 10), 8192).unwrap();
        let refused = b.cover(&pool, &mut buf, Some(600 << 10), 8192).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                field: "x.pool",
                packet: 600 << 10,
                leased: 600 << 10,
                limit: 1 << 20
            }
        );
        assert_eq!(
            refused.to_string(),
            "a packet of 600KiB does not fit in x.pool (1MiB): packets arriving or waiting for the log hold 600KiB"
        );
        pool.set_limit(ByteSize(512 << 10));
        a.cover(&pool, &mut buf, Some(600 << 10), 8192).unwrap();
        assert!(a.is_held(), "the lease taken before is kept");
        assert!(a.take_whole(599 << 10).0.is_none(), "not whole yet");
        drop(a.take_whole(600 << 10));
        assert!(!a.is_held());
        assert!(a.cover(&pool, &mut buf, Some(600 << 10), 8192).is_err());
    }
}
