//! `max_bytes_per_sec`: paces the upload for metered uplinks (a token bucket with up to one
//! second of burst), counted in bytes of keys, values and headers.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sleep_or_cancel;

/// Paces uploads to a byte rate (token bucket with up to one second of burst).
#[derive(Debug)]
pub(super) struct Pace {
    /// Bytes per second; 0 means no cap.
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Pace {
    /// A pace of `rate` bytes per second (None: as fast as Kafka takes them).
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.unwrap_or(0),
            start: Instant::now(),
            sent: 0,
        }
    }

    fn due(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.sent as f64 / self.rate as f64)
    }

    /// Counts `bytes` sent and waits until the rate allows more (or `cancel`).
    pub async fn wait(&mut self, bytes: u64, cancel: &CancellationToken) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        if now > self.due() + Duration::from_secs(1) {
            // Idle for a while: do not let the unused allowance become a huge burst.
            self.start = now;
            self.sent = 0;
        }
        self.sent += bytes;
        let due = self.due();
        if due > now {
            sleep_or_cancel(due - now, cancel).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn uploads_are_held_to_the_rate_with_a_second_of_burst_at_most() {
        let cancel = CancellationToken::new();
        let mut pace = Pace::new(Some(1000));
        let start = Instant::now();
        for _ in 0..5 {
            pace.wait(1000, &cancel).await;
        }
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(4900)..=Duration::from_millis(5100)).contains(&took),
            "{took:?}"
        );
        let mut free = Pace::new(None);
        let start = Instant::now();
        free.wait(u64::MAX, &cancel).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
