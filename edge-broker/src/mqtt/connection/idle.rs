//! Parking a connection that has nothing to do, and resuming it ([`crate::mqtt::park`]): when
//! it may park, what it gives up (its task, its timer, its socket's registration with the
//! reactor, its buffers) and how it gets them back (`unpark`: the resumed connection's task,
//! the serve loop, is spawned by `mod.rs`, which this room does not import).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::facts::TopicFacts;
use super::state::{Connection, Ingest, Topics, Turn};
use crate::listener::Unplugged;
use crate::mqtt::park::{Parking, ParkingLot};

/// How long a client without keep alive has for a large packet (one leased from
/// `mqtt.max_partial_packet_bytes_total`) to arrive whole: what 1.5 × a keep alive of 60 s
/// gives. Its bytes do not move the keep-alive clock; the packet does once whole.
pub(super) const LARGE_PACKET_WINDOW: Duration = Duration::from_secs(90);

/// How long after the last read that moved the clock a connection may go without another:
/// its keep-alive window (1.5 × keep alive, in milliseconds), or, without keep alive, none
/// unless a large packet is arriving.
fn keep_alive_window(keep_alive_ms: Option<NonZeroU32>, large_arriving: bool) -> Option<Duration> {
    match keep_alive_ms {
        Some(ms) => Some(Duration::from_millis(u64::from(ms.get()))),
        None => large_arriving.then_some(LARGE_PACKET_WINDOW),
    }
}

impl Connection {
    /// Whether this turn may end in parking, once the connection was idle long enough:
    /// parking is on, the stream is plain TCP, and nothing is in flight on its side (input
    /// read and not handled, output, a publish on its way to the log or an answer owed, a
    /// state change or room awaited). What its session holds is checked when it parks.
    pub(super) fn may_park(&self, turn: &Turn) -> bool {
        !self.settings.park_idle_after.0.is_zero()
            && turn.read
            && !(turn.write || turn.gate || turn.pacing || turn.ingest)
            && self.inbuf.is_empty()
            && self.outbuf.is_empty()
            && self.qos2_answers == 0
            && self.ingest.as_deref().is_none_or(Ingest::is_settled)
            && self.stream.is_tcp()
    }

    /// When the connection parks if nothing happens before (`None`: parking is off).
    pub(super) fn park_deadline(&self) -> Option<Instant> {
        let after = self.settings.park_idle_after.0;
        (!after.is_zero())
            .then(|| self.last_read + Duration::from_millis(u64::from(self.stirred_ms)) + after)
    }

    /// When its client's keep alive runs out, if it has one (nothing moves it while the
    /// connection is parked). A large packet arriving must be whole within that window of the
    /// last read before it, or within [`LARGE_PACKET_WINDOW`] for a client without keep alive.
    pub(super) fn keep_alive_deadline(&self) -> Option<Instant> {
        keep_alive_window(self.keep_alive_ms, self.large_input.is_held())
            .map(|window| self.last_read + window)
    }

    /// Notes that the connection had something to do now (parking counts from here).
    pub(super) fn stir(&mut self) {
        if self.settings.park_idle_after.0.is_zero() {
            return;
        }
        let now = Instant::now();
        match u32::try_from(now.duration_since(self.last_read).as_millis()) {
            Ok(ms) => self.stirred_ms = ms,
            // 49 days without a byte from the client: only one without keep alive, for which
            // `last_read` counts for nothing else.
            Err(_) => {
                self.last_read = now;
                self.stirred_ms = 0;
            }
        }
    }

    /// Parks the connection (its task ends here), or hands it back to go on serving: its
    /// session got a delivery, it was taken over or the broker stops (all checked under the
    /// session's lock), or the socket could not be watched.
    pub(super) fn park(mut self: Box<Self>) -> Result<(), Box<Self>> {
        let lot = self.server.parking().map(Arc::clone);
        let Some(lot) = lot.filter(|_| self.stream.is_tcp()) else {
            self.stir();
            return Err(self);
        };
        let stream = std::mem::replace(&mut self.stream, Box::new(Unplugged));
        let socket = match stream.into_tcp().map(TcpStream::into_std) {
            Some(Ok(socket)) => socket,
            other => {
                // Out of the reactor, but broken: the connection's next read fails and it
                // closes as any connection whose socket failed.
                if let Some(Err(err)) = other {
                    tracing::warn!(client_id = %self.session.client_id, "parking a connection: {err}");
                }
                return Err(self);
            }
        };
        self.timer = None;
        forget_topic_facts(&mut self.topics);
        self.inbuf = BytesMut::new();
        self.outbuf = BytesMut::new();
        self.read_burst = false;
        let deadline = self.keep_alive_deadline();
        let (session, server, generation) = (
            Arc::clone(&self.session),
            Arc::clone(&self.server),
            self.generation,
        );
        let parking = Parking {
            session: Arc::clone(&session),
            socket,
            deadline,
            tracked: server.track(),
            connection: self,
        };
        let parked = lot.park(parking, |state| {
            state.queue.is_empty() && !session.is_kicked(generation) && !server.is_stopping()
        });
        match parked {
            Ok(()) => Ok(()),
            Err(Parking {
                socket,
                mut connection,
                ..
            }) => {
                connection.plug(socket);
                connection.stir();
                Err(connection)
            }
        }
    }

    /// Takes a parked connection (woken under `token`) out of `lot` and puts `socket` back into
    /// the reactor of the runtime resumed connections run on; the serve loop (`mod.rs`) then
    /// runs it again in a task of its own.
    pub(super) fn unpark(&mut self, lot: &ParkingLot, token: u64, socket: std::net::TcpStream) {
        lot.unwatch(token, &socket, self.keep_alive_deadline());
        {
            // A waker may be on a thread outside the runtime (the log's writer).
            let _entered = lot.runtime().enter();
            self.plug(socket);
        }
        // Woken for something: it is not idle now, whatever it was woken for (and no longer
        // fresh: one woken at its keep-alive deadline must find it passed, not park again).
        self.stir();
        self.fresh = false;
    }

    /// Puts `socket` back into the reactor as the connection's stream (on failure the stream
    /// stays unplugged: the next read fails and the connection closes).
    fn plug(&mut self, socket: std::net::TcpStream) {
        match TcpStream::from_std(socket) {
            Ok(stream) => self.stream = Box::new(stream),
            Err(err) => {
                tracing::warn!(client_id = %self.session.client_id, "resuming a parked connection: {err}");
            }
        }
    }
}

/// Gives back what a connection decided for its client's recent topics (made again at its
/// next publish), and the box that held them unless it holds topic aliases (the client's).
fn forget_topic_facts(topics: &mut Option<Box<Topics>>) {
    match topics {
        Some(kept) if kept.has_no_aliases() => *topics = None,
        Some(kept) => kept.facts = TopicFacts::default(),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::connection::facts::Facts;
    use edge_proto::mqtt::MqttString;

    fn with_a_topic() -> Box<Topics> {
        let mut topics = Box::<Topics>::default();
        topics.facts.insert(Facts::new("a/b".into(), false));
        topics
    }

    /// A parked connection holds no topic facts: the box goes with them, unless the client set
    /// topic aliases, which are kept (without the facts).
    #[test]
    fn parking_gives_back_topic_facts_and_keeps_aliases() {
        let mut topics = Some(with_a_topic());
        forget_topic_facts(&mut topics);
        assert!(topics.is_none());

        let mut aliased = with_a_topic();
        aliased
            .inbound
            .insert(1, MqttString::try_from("a/b").unwrap());
        let mut topics = Some(aliased);
        forget_topic_facts(&mut topics);
        let kept = topics.unwrap();
        assert_eq!(kept.facts.len(), 0);
        assert_eq!(kept.inbound.len(), 1);

        let mut none = None;
        forget_topic_facts(&mut none);
        assert!(none.is_none());
    }

    /// A client without keep alive has no deadline, except while a large packet arrives: that
    /// must be whole within [`LARGE_PACKET_WINDOW`] (the keep-alive case is the integration
    /// test `the_bytes_of_a_large_packet_do_not_keep_its_connection_alive`).
    #[test]
    fn a_large_packet_has_a_window_even_without_keep_alive() {
        let three_s = NonZeroU32::new(3000);
        assert_eq!(keep_alive_window(None, false), None);
        assert_eq!(keep_alive_window(None, true), Some(LARGE_PACKET_WINDOW));
        for arriving in [false, true] {
            assert_eq!(
                keep_alive_window(three_s, arriving),
                Some(Duration::from_secs(3))
            );
        }
    }
}
