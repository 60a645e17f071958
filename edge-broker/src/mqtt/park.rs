//! Parked connections: a logged-in MQTT connection over plain TCP that had nothing to do for
//! `mqtt.park_idle_after` gives up what only a running connection needs — its task, its
//! timer, its socket's registration with the runtime's reactor (about half of what an idle
//! client held; BENCHMARKS.md, "Footprint") — and waits here. Its socket is watched by one
//! epoll instance, on the lot's own thread ([`ParkingLot::watch`], blocked in `epoll_wait`
//! until a socket or the earliest keep-alive deadline needs it); the connection itself waits
//! in its session ([`SessionState::park`]).
//!
//! A parked connection is resumed (a task of its own again, its socket back in the reactor)
//! by the first of:
//! - its socket: readable, closed or failed (one-shot epoll interest);
//! - its session: a delivery queued, a takeover, the broker stopping — each takes it out of
//!   the session under the session's lock ([`Session::kick`], `Session::put`,
//!   `MqttServer::stop_connections`);
//! - its keep-alive deadline (the lot's `epoll_wait` timeout): the resumed connection finds it
//!   passed and closes as any connection whose client went quiet.
//!
//! Invariants:
//! - A connection parks only with nothing in flight on its side (no input read and not
//!   handled, no output, no publish on its way to the log, no state change awaited), and, under
//!   its session's lock, only with no delivery queued, not taken over, and the broker not
//!   stopping. Every waker takes the connection out under that lock after making its change,
//!   so a change is seen either by the connection before it parks or by the waker after.
//! - A token is used once: an event of an earlier parking (a late epoll event, a deadline)
//!   finds no connection under it and does nothing.
//! - Whoever takes a connection out of its session resumes it, and resuming ends its
//!   registration here (entry, deadline, epoll interest): the lot holds nothing for a
//!   connection that is not parked, so its memory is bounded by the connections parked.
//! - A parked connection counts as a running connection for the broker's drain (it holds a
//!   task tracker token), so a stop waits for it to be resumed and closed.
//!
//! TLS and WebSocket connections are not parked: their streams hold state (a TLS session, a
//! WebSocket pipe task) that a bare socket cannot.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::session::{Parked, Resume, Session, SessionState};

/// Events taken from the epoll instance per call.
const EVENTS_PER_WAIT: usize = 64;
/// The epoll data of the lot's own wake-up (tokens start at 1).
const WAKER: u64 = 0;

/// Where idle connections wait (one per MQTT server, made when it starts serving).
pub struct ParkingLot {
    epoll: Epoll,
    /// Wakes [`ParkingLot::watch`]: an earlier deadline, or the end.
    waker: EventFd,
    /// The sessions of parked connections, by token (their deadlines are in `deadlines`: a
    /// resumed connection names its own, so an entry here is 16 bytes).
    spots: Mutex<HashMap<u64, Arc<Session>>>,
    /// Keep-alive deadlines of parked connections, earliest first.
    deadlines: Mutex<BTreeSet<(Instant, u64)>>,
    /// The last token handed out.
    tokens: AtomicU64,
    /// Set when the lot stops watching (the broker stops, or epoll failed): nothing parks
    /// any more.
    closed: AtomicBool,
    /// The runtime resumed connections run on (the lot's thread is outside it).
    runtime: Handle,
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.len())
            .finish_non_exhaustive()
    }
}

/// A connection to park, and what the lot keeps with it.
pub struct Parking<C> {
    /// Its session, where it waits.
    pub session: Arc<Session>,
    /// Its socket, out of the reactor.
    pub socket: std::net::TcpStream,
    /// When its client's keep alive expires, if it has one.
    pub deadline: Option<Instant>,
    /// Keeps the broker's drain waiting while it is parked.
    pub tracked: TaskTrackerToken,
    /// The connection.
    pub connection: Box<C>,
}

impl ParkingLot {
    /// Makes the lot's epoll instance and starts its thread; resumed connections run on the
    /// current runtime.
    pub fn open() -> std::io::Result<(Arc<ParkingLot>, std::thread::JoinHandle<()>)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
        let lot = Arc::new(ParkingLot {
            epoll,
            waker,
            spots: Mutex::new(HashMap::new()),
            deadlines: Mutex::new(BTreeSet::new()),
            tokens: AtomicU64::new(WAKER),
            closed: AtomicBool::new(false),
            runtime: Handle::current(),
        });
        let watcher = Arc::clone(&lot);
        let thread = std::thread::Builder::new()
            .name("mqtt-parking".to_owned())
            // It only sorts tokens: no deep calls (resuming spawns a task).
            .stack_size(64 << 10)
            .spawn(move || watcher.watch())?;
        Ok((lot, thread))
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.spots.lock().len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.spots.lock().is_empty()
    }

    /// The runtime a resumed connection is spawned on.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Parks `parking.connection` in its session, if `may_park` agrees under the session's
    /// lock (no delivery queued, not taken over, the broker not stopping); otherwise, or if
    /// the socket cannot be watched, hands the connection and its socket back.
    #[allow(clippy::result_large_err)] // handed back whole, to go on serving
    pub fn park<C: Resume + 'static>(
        &self,
        parking: Parking<C>,
        may_park: impl FnOnce(&SessionState) -> bool,
    ) -> Result<(), Parking<C>> {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::clone(&parking.session);
        let mut state = session.lock();
        if !may_park(&state) {
            return Err(parking);
        }
        // The entry before the interest: an event for the token finds the session, and
        // waits for its lock until the connection is in it.
        self.spots.lock().insert(token, Arc::clone(&session));
        if self.closed.load(Ordering::SeqCst) {
            // [`ParkingLot::close`] set the flag before it took the entries it resumes.
            self.spots.lock().remove(&token);
            return Err(parking);
        }
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        if let Err(err) = self
            .epoll
            .add(&parking.socket, EpollEvent::new(interest, token))
        {
            self.spots.lock().remove(&token);
            tracing::debug!("not parking a connection: epoll: {err}");
            return Err(parking);
        }
        if let Some(at) = parking.deadline {
            let first = {
                let mut deadlines = self.deadlines.lock();
                deadlines.insert((at, token));
                deadlines.first() == Some(&(at, token))
            };
            if first {
                self.wake_watcher();
            }
        }
        let Parking {
            socket,
            tracked,
            connection,
            ..
        } = parking;
        state.park(Parked {
            token,
            socket,
            tracked,
            connection,
        });
        Ok(())
    }

    /// Ends the registration of the connection parked under `token` with `deadline` (it is
    /// being resumed).
    pub fn unwatch(&self, token: u64, socket: &std::net::TcpStream, deadline: Option<Instant>) {
        if self.spots.lock().remove(&token).is_some()
            && let Some(at) = deadline
        {
            self.deadlines.lock().remove(&(at, token));
        }
        // Fails only if the socket is not registered (an epoll failure resumed everything).
        let _ = self.epoll.delete(socket);
    }

    /// Stops the lot's thread (the broker stops; `MqttServer::stop_connections` resumes the
    /// parked connections): nothing parks any more.
    pub fn stop(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_watcher();
    }

    fn wake_watcher(&self) {
        // Fails only when the counter is full: the thread is woken already.
        let _ = self.waker.write(1);
    }

    /// Resumes the connection parked under `token`, if it still is.
    fn wake(&self, token: u64) {
        let Some(session) = self.spots.lock().get(&token).map(Arc::clone) else {
            return;
        };
        let parked = session.lock().take_parked(Some(token));
        if let Some(parked) = parked {
            parked.resume();
        }
    }

    /// Resumes the connections whose keep-alive deadline passed; when the next one is due.
    fn wake_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let (due, next) = {
            let mut deadlines = self.deadlines.lock();
            let later = deadlines.split_off(&(now, u64::MAX));
            let due = std::mem::replace(&mut *deadlines, later);
            (due, deadlines.first().map(|(at, _)| *at))
        };
        for (_, token) in due {
            self.wake(token);
        }
        next
    }

    /// The lot's thread: resumes parked connections whose socket has something (bytes, the
    /// end, an error) or whose keep-alive deadline passed, until [`ParkingLot::stop`].
    fn watch(&self) {
        let mut events = [EpollEvent::empty(); EVENTS_PER_WAIT];
        loop {
            let next = self.wake_due();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let timeout = next.map_or(EpollTimeout::NONE, |at| {
                // Rounded up: a wait shorter than the time left would wake to nothing due.
                let left =
                    at.saturating_duration_since(Instant::now()) + Duration::from_micros(999);
                EpollTimeout::try_from(left).unwrap_or(EpollTimeout::MAX)
            });
            match self.epoll.wait(&mut events, timeout) {
                Ok(n) => {
                    for event in &events[..n] {
                        match event.data() {
                            WAKER => {
                                let _ = self.waker.read();
                            }
                            token => self.wake(token),
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(err) => {
                    tracing::error!(
                        "parked MQTT connections' epoll failed, resuming them all and parking no more: {err}"
                    );
                    self.close();
                    return;
                }
            }
        }
    }

    /// Parks no more, and resumes every parked connection.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let tokens: Vec<u64> = self.spots.lock().keys().copied().collect();
        for token in tokens {
            self.wake(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc::{Receiver, Sender, channel};

    use edge_proto::mqtt::QoS;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::hub::{Delivery, Mailbox};
    use crate::message::{Message, MessageProperties, Origin};
    use crate::metrics::front::{FrontMetrics, Protocol};
    use crate::mqtt::session::QueueLimits;

    /// Long enough for a machine under load; the tests wait this long only when they fail.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// A fake connection (the real one is `mqtt::connection`, tried end to end in
    /// `tests/mqtt_parking.rs`): resuming it ends its registration as the real one does and
    /// reports its token and socket.
    struct ReportingConnection {
        lot: Arc<ParkingLot>,
        deadline: Option<Instant>,
        resumed: Sender<(u64, TcpStream)>,
    }

    impl Resume for ReportingConnection {
        fn resume(self: Box<Self>, token: u64, socket: TcpStream) {
            self.lot.unwatch(token, &socket, self.deadline);
            let _ = self.resumed.send((token, socket));
        }
    }

    /// A lot, and a session with an online client.
    struct Bench {
        lot: Arc<ParkingLot>,
        thread: Option<std::thread::JoinHandle<()>>,
        session: Arc<Session>,
        tracker: TaskTracker,
        resumed: Sender<(u64, TcpStream)>,
        reports: Receiver<(u64, TcpStream)>,
    }

    fn online_session(key: u64) -> Arc<Session> {
        let limits = Arc::new(QueueLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
            max_total_bytes: 1 << 20,
            max_wait: Duration::ZERO,
        });
        let metrics = Arc::new(FrontMetrics::new(Protocol::Mqtt));
        let session = Arc::new(Session::new(key, format!("c{key}").into(), limits, metrics));
        session.lock().online = true;
        session
    }

    impl Bench {
        fn new() -> Bench {
            let (lot, thread) = ParkingLot::open().unwrap();
            let (resumed, reports) = channel();
            Bench {
                lot,
                thread: Some(thread),
                session: online_session(1),
                tracker: TaskTracker::new(),
                resumed,
                reports,
            }
        }

        /// Parks a connection of the bench's session on the server side of a new TCP
        /// connection, with `deadline`: the client side.
        fn park(&self, deadline: Option<Instant>) -> TcpStream {
            self.park_in(&self.session, deadline)
        }

        /// The same, in `session`.
        fn park_in(&self, session: &Arc<Session>, deadline: Option<Instant>) -> TcpStream {
            let (client, server) = tcp_pair();
            let parking = Parking {
                session: Arc::clone(session),
                ..self.parking(server, deadline)
            };
            self.lot
                .park(parking, |_| true)
                .map_err(|_| "not parked")
                .unwrap();
            client
        }

        fn parking(
            &self,
            socket: TcpStream,
            deadline: Option<Instant>,
        ) -> Parking<ReportingConnection> {
            Parking {
                session: Arc::clone(&self.session),
                socket,
                deadline,
                tracked: self.tracker.token(),
                connection: Box::new(ReportingConnection {
                    lot: Arc::clone(&self.lot),
                    deadline,
                    resumed: self.resumed.clone(),
                }),
            }
        }

        /// The next resumed connection.
        fn resumed(&self) -> (u64, TcpStream) {
            self.reports
                .recv_timeout(PATIENCE)
                .expect("a connection resumed")
        }

        /// Asserts that nothing is registered any more: no entry, no deadline, no drain held.
        fn assert_empty(&self) {
            assert!(self.lot.is_empty(), "{:?}", self.lot);
            assert!(self.lot.deadlines.lock().is_empty());
            assert!(self.session.lock().take_parked(None).is_none());
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            self.lot.stop();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn delivery() -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: bytes::Bytes::from_static(b"p"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: MessageProperties::default(),
                received_ms: 1,
                origin: Origin::Mqtt,
                publisher: None,
                nats_subject: None,
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
        }
    }

    /// Bytes from the client resume the connection, and are still there to be read.
    #[tokio::test]
    async fn a_parked_connection_is_resumed_by_bytes_and_they_are_not_lost() {
        let bench = Bench::new();
        let mut client = bench.park(None);
        assert_eq!(bench.lot.len(), 1);
        assert_eq!(
            bench.tracker.len(),
            1,
            "a parked connection holds the drain"
        );
        client.write_all(b"\xc0\x00").unwrap(); // PINGREQ
        let (_, mut socket) = bench.resumed();
        bench.assert_empty();
        // `Parked::resume` lets go of the drain right after handing the connection over (the
        // report this test reads): wait for it, on a machine under load, rather than race it.
        let deadline = std::time::Instant::now() + PATIENCE;
        while !bench.tracker.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a resumed connection still holds the drain"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        socket.set_nonblocking(false).unwrap();
        let mut ping = [0; 2];
        socket.read_exact(&mut ping).unwrap();
        assert_eq!(ping, *b"\xc0\x00");
    }

    /// The client closing its socket resumes the connection (which then reads the end).
    #[tokio::test]
    async fn a_parked_connection_is_resumed_when_its_client_closes() {
        let bench = Bench::new();
        drop(bench.park(None));
        let (_, mut socket) = bench.resumed();
        bench.assert_empty();
        socket.set_nonblocking(false).unwrap();
        assert_eq!(socket.read(&mut [0; 8]).unwrap(), 0);
    }

    /// A keep-alive deadline resumes the connection; an earlier one added after a later one
    /// wakes the lot's thread from its longer wait.
    #[tokio::test]
    async fn a_parked_connection_is_resumed_at_its_keep_alive_deadline() {
        let bench = Bench::new();
        let other = online_session(2);
        let _quiet = bench.park_in(&other, Some(Instant::now() + Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(50));
        let _client = bench.park(Some(Instant::now() + Duration::from_millis(50)));
        let (token, _) = bench.resumed();
        assert_eq!(bench.lot.len(), 1, "only the due one");
        assert!(bench.session.lock().take_parked(None).is_none());
        assert!(
            other
                .lock()
                .take_parked(None)
                .is_some_and(|p| p.token != token)
        );
    }

    /// A delivery queued for the session resumes the connection, at once (on the deliverer's
    /// thread).
    #[tokio::test]
    async fn a_parked_connection_is_resumed_by_a_delivery() {
        let bench = Bench::new();
        let _client = bench.park(None);
        assert!(bench.session.deliver(delivery()));
        let (_, _) = bench.reports.try_recv().expect("resumed by the delivery");
        bench.assert_empty();
        assert_eq!(
            bench.session.lock().queue.len(),
            1,
            "the delivery waits for it"
        );
    }

    /// A takeover resumes the connection, which then finds itself kicked.
    #[tokio::test]
    async fn a_parked_connection_is_resumed_by_a_takeover() {
        let bench = Bench::new();
        bench.session.lock().generation = 1;
        let _client = bench.park(None);
        bench.session.kick();
        let (_, _) = bench.reports.try_recv().expect("resumed by the kick");
        assert!(bench.session.is_kicked(1));
        bench.assert_empty();
    }

    /// A connection is handed back, socket and all, when `may_park` refuses (a delivery came
    /// in, it was taken over, the broker stops), and after the lot stopped.
    #[tokio::test]
    async fn a_connection_the_session_refuses_is_handed_back_whole() {
        let bench = Bench::new();
        let (mut client, server) = tcp_pair();
        let back = bench
            .lot
            .park(bench.parking(server, None), |state| {
                assert!(state.queue.is_empty());
                false
            })
            .expect_err("handed back");
        bench.assert_empty();
        client.write_all(b"x").unwrap();
        let mut socket = back.socket;
        socket.set_nonblocking(false).unwrap();
        assert_eq!(socket.read(&mut [0; 1]).unwrap(), 1);
        bench.lot.stop();
        let back = bench.lot.park(bench.parking(socket, None), |_| true);
        assert!(back.is_err(), "a stopped lot parks nothing");
        bench.assert_empty();
    }

    /// An event of an earlier parking (here: its token woken late) finds nothing: the
    /// connection parked since stays parked.
    #[tokio::test]
    async fn an_earlier_parkings_event_resumes_nothing() {
        let bench = Bench::new();
        let _first = bench.park(None);
        bench.session.kick();
        let (old, _) = bench.reports.try_recv().unwrap();
        let _second = bench.park(None);
        bench.lot.wake(old);
        assert!(bench.reports.try_recv().is_err());
        assert_eq!(bench.lot.len(), 1);
    }
}
