//! Who may hold a connection: seats for clients that logged in, a separate and smaller count
//! for connections that have not, and per-source caps on both.
//!
//! A new TCP connection first gets a [`Pending`] ticket (or is closed at once): at most
//! `max_pending_per_source` from one source address, and at most `max_pending_connections` per
//! front end: when they are all taken, the oldest pending connection is evicted (closed) to
//! make room, so a flood of connections that never log in, even from many addresses, cannot
//! keep a device from logging in; it would have to open connections faster than a device
//! sends its CONNECT. A pending connection may buffer only a small CONNECT and must log in
//! within the connect/auth timeout. Only after a successful login does it trade its ticket for
//! a [`Seat`], one of `max_connections`. So sockets that never log in can fill the pending
//! count of their own address, never the seats of devices that did log in, and a device
//! connecting from another address still finds a pending place.
//! `max_connections_per_source` (0: unlimited; gateways often see many devices behind one NAT
//! address) caps pending and seated connections of one source together.
//!
//! Sources are IPv4 addresses and IPv6 /64 networks, as for failed logins
//! ([`crate::auth::failures::Source`]). The table holds one entry per source with at least one
//! connection, so it is bounded by the connections themselves.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::auth::failures::Source;
use crate::metrics::PromText;

/// The caps of one front end (its `[mqtt]` / `[nats]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// `max_connections`: clients logged in at once.
    pub max_connections: usize,
    /// `max_pending_connections`: connections not logged in yet.
    pub max_pending: usize,
    /// `max_pending_per_source`: connections not logged in yet from one source.
    pub max_pending_per_source: usize,
    /// `max_connections_per_source`: connections (pending or not) from one source; 0: no cap.
    pub max_per_source: usize,
}

impl AdmissionLimits {
    /// The `[mqtt]` caps.
    pub fn mqtt(m: &crate::config::MqttSection) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: m.max_connections,
            max_pending: m.max_pending_connections,
            max_pending_per_source: m.max_pending_per_source,
            max_per_source: m.max_connections_per_source,
        }
    }

    /// The `[nats]` caps.
    pub fn nats(n: &crate::config::NatsSection) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: n.max_connections,
            max_pending: n.max_pending_connections,
            max_pending_per_source: n.max_pending_per_source,
            max_per_source: n.max_connections_per_source,
        }
    }
}

/// Why a connection was refused (a label of `edge_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every seat is taken by a client that logged in.
    #[error("max_connections reached")]
    Connections,
    /// Too many connections waited to log in: the oldest was evicted for a newer one.
    #[error("max_pending_connections reached: evicted for a newer connection")]
    Pending,
    /// Too many connections from this source wait to log in.
    #[error("max_pending_per_source reached")]
    PendingPerSource,
    /// Too many connections from this source.
    #[error("max_connections_per_source reached")]
    PerSource,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::Connections,
        Refusal::Pending,
        Refusal::PendingPerSource,
        Refusal::PerSource,
    ];

    /// The config key that refused (and the metric label).
    pub fn key(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections",
            Refusal::Pending => "max_pending_connections",
            Refusal::PendingPerSource => "max_pending_per_source",
            Refusal::PerSource => "max_connections_per_source",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    pending: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Table {
    pending: usize,
    seated: usize,
    sources: HashMap<Source, Count>,
    /// Pending connections by arrival, each with what evicts it.
    arrivals: BTreeMap<u64, CancellationToken>,
    next_arrival: u64,
}

/// The admission state of one front end, shared by its listeners (plain and TLS).
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    table: Mutex<Table>,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl Admission {
    /// Nothing admitted yet.
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::default()),
            refused: Default::default(),
        })
    }

    /// A ticket for a new connection from `ip`, or why it is refused (counted).
    pub fn arrive(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Refusal> {
        let source = Source::of(ip);
        let mut table = self.table.lock();
        let count = table.sources.get(&source).copied().unwrap_or_default();
        let refusal = if count.pending >= self.limits.max_pending_per_source {
            Some(Refusal::PendingPerSource)
        } else if self.limits.max_per_source > 0 && count.total >= self.limits.max_per_source {
            Some(Refusal::PerSource)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(table);
            self.count(refusal);
            return Err(refusal);
        }
        if table.pending >= self.limits.max_pending {
            // Evict the oldest (it leaves the table when its task sees the token).
            if let Some((_, oldest)) = table.arrivals.pop_first() {
                oldest.cancel();
                self.count(Refusal::Pending);
            }
        }
        table.pending += 1;
        let entry = table.sources.entry(source).or_default();
        entry.pending += 1;
        entry.total += 1;
        let arrival = table.next_arrival;
        table.next_arrival += 1;
        let evict = CancellationToken::new();
        table.arrivals.insert(arrival, evict.clone());
        Ok(Pending {
            admission: Some(Arc::clone(self)),
            source,
            arrival,
            evict,
        })
    }

    /// Connections not logged in yet, and seated ones.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.table.lock();
        (table.pending, table.seated)
    }

    /// Refusals by `refusal` so far.
    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.refused[refusal as usize].load(Ordering::Relaxed)
    }

    fn count(&self, refusal: Refusal) {
        self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&self, source: Source, pending: Option<u64>, seated: bool) {
        let mut table = self.table.lock();
        if let Some(arrival) = pending {
            table.pending -= 1;
            table.arrivals.remove(&arrival);
        }
        let pending = pending.is_some();
        if seated {
            table.seated -= 1;
        }
        if let Some(entry) = table.sources.get_mut(&source) {
            if pending {
                entry.pending -= 1;
            }
            entry.total -= 1;
            if entry.total == 0 {
                table.sources.remove(&source);
            }
        }
    }

    /// Renders `edge_connections_pending{protocol}` and
    /// `edge_connections_refused_total{protocol,reason}` for the front ends given.
    pub fn render(text: &mut PromText, fronts: &[(&str, &Admission)]) {
        let labels: Vec<[(&str, &str); 1]> =
            fronts.iter().map(|(p, _)| [("protocol", *p)]).collect();
        let pending: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(fronts)
            .map(|(l, (_, a))| (&l[..], a.counts().0 as f64))
            .collect();
        text.gauge(
            "edge_connections_pending",
            "Connections that have not logged in yet.",
            &pending,
        );
        let refused_labels: Vec<[(&str, &str); 2]> = fronts
            .iter()
            .flat_map(|(p, _)| {
                Refusal::ALL
                    .iter()
                    .map(|r| [("protocol", *p), ("reason", r.key())])
            })
            .collect();
        let values = fronts
            .iter()
            .flat_map(|(_, a)| Refusal::ALL.iter().map(|r| a.refused(*r)));
        let refused: Vec<(&[(&str, &str)], u64)> =
            refused_labels.iter().map(|l| &l[..]).zip(values).collect();
        text.counter(
            "edge_connections_refused_total",
            "Connections refused before or at login, by the config key that refused them.",
            &refused,
        );
    }
}

/// A connection that has not logged in: holds one pending place until it is seated or ends.
#[derive(Debug)]
pub struct Pending {
    admission: Option<Arc<Admission>>,
    source: Source,
    arrival: u64,
    evict: CancellationToken,
}

impl Pending {
    /// Cancelled when this connection is evicted for a newer one (`max_pending_connections`):
    /// the connection must then close.
    pub fn eviction(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// After a successful login: a seat, or `Refusal::Connections` (counted) when all are taken.
    pub fn seat(mut self) -> Result<Seat, Refusal> {
        let Some(admission) = self.admission.take() else {
            return Err(Refusal::Connections);
        };
        let mut table = admission.table.lock();
        if table.seated >= admission.limits.max_connections {
            drop(table);
            admission.count(Refusal::Connections);
            // Dropping `self` now would find no admission: leave as pending here.
            admission.leave(self.source, Some(self.arrival), false);
            return Err(Refusal::Connections);
        }
        table.pending -= 1;
        table.seated += 1;
        table.arrivals.remove(&self.arrival);
        if let Some(entry) = table.sources.get_mut(&self.source) {
            entry.pending -= 1;
        }
        drop(table);
        Ok(Seat {
            admission,
            source: self.source,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.leave(self.source, Some(self.arrival), false);
        }
    }
}

/// A logged-in client's place among `max_connections`; given back when dropped.
#[derive(Debug)]
pub struct Seat {
    admission: Arc<Admission>,
    source: Source,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.admission.leave(self.source, None, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 2,
            max_pending: 3,
            max_pending_per_source: 2,
            max_per_source: 0,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn pending_connections_never_take_seats() {
        let admission = Admission::new(limits());
        let a = admission.arrive(ip(1)).unwrap();
        let _b = admission.arrive(ip(1)).unwrap();
        assert_eq!(
            admission.arrive(ip(1)).unwrap_err(),
            Refusal::PendingPerSource
        );
        let c = admission.arrive(ip(2)).unwrap();
        // Seats are only for those that logged in; two pending from 10.0.0.1 did not.
        let seat_a = a.seat().unwrap();
        let seat_c = c.seat().unwrap();
        assert_eq!(admission.counts(), (1, 2));
        let d = admission.arrive(ip(4)).unwrap();
        assert_eq!(d.seat().unwrap_err(), Refusal::Connections);
        assert_eq!(admission.counts(), (1, 2));
        drop((seat_a, seat_c));
        assert_eq!(admission.counts(), (1, 0));
        assert_eq!(admission.refused(Refusal::PendingPerSource), 1);
        assert_eq!(admission.refused(Refusal::Connections), 1);
    }

    #[test]
    fn a_full_pending_count_evicts_the_oldest() {
        let admission = Admission::new(limits());
        let first = admission.arrive(ip(1)).unwrap();
        let second = admission.arrive(ip(2)).unwrap();
        let third = admission.arrive(ip(3)).unwrap();
        let fourth = admission.arrive(ip(4)).unwrap();
        assert!(first.evict.is_cancelled());
        assert!(!second.evict.is_cancelled() && !third.evict.is_cancelled());
        assert_eq!(admission.refused(Refusal::Pending), 1);
        // The evicted one counts until it is gone; the next eviction takes the next oldest.
        drop(first);
        let _fifth = admission.arrive(ip(5)).unwrap();
        assert!(second.evict.is_cancelled() && !fourth.evict.is_cancelled());
        assert_eq!(admission.counts(), (4, 0));
    }

    #[test]
    fn the_per_source_cap_counts_pending_and_seated_together() {
        let admission = Admission::new(AdmissionLimits {
            max_per_source: 2,
            ..limits()
        });
        let seat = admission.arrive(ip(1)).unwrap().seat().unwrap();
        let pending = admission.arrive(ip(1)).unwrap();
        assert_eq!(admission.arrive(ip(1)).unwrap_err(), Refusal::PerSource);
        drop(seat);
        let _again = admission.arrive(ip(1)).unwrap();
        drop(pending);
        assert_eq!(admission.table.lock().sources.len(), 1);
    }

    #[test]
    fn sources_leave_the_table_with_their_last_connection() {
        let admission = Admission::new(limits());
        let seat = admission.arrive(ip(1)).unwrap().seat().unwrap();
        let pending = admission.arrive(ip(2)).unwrap();
        drop((seat, pending));
        assert!(admission.table.lock().sources.is_empty());
        assert_eq!(admission.counts(), (0, 0));
    }
}
