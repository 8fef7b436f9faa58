//! The bandwidth cap shared by every repair of a server (`--repair-bandwidth`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Source bandwidth shared by all repairs: a token bucket holding at most one second of
/// tokens. A reader takes tokens for a message it received and, when that leaves the bucket
/// in debt, waits until the debt is paid before reading on; HTTP/2 flow control then slows
/// the source. Callers queue behind each other's debt, so the long-run rate is exact.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(super) fn new(rate: u64) -> Self {
        TokenBucket {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    pub(super) async fn take(&self, n: u64) {
        let wait = {
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.rate) - n as f64;
            st.1 = now;
            (st.0 < 0.0).then(|| Duration::from_secs_f64(-st.0 / self.rate))
        };
        // Rate limiting, not synchronisation: the wait is what the bandwidth cap costs.
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn token_bucket_holds_the_rate() {
        let b = TokenBucket::new(10_000_000);
        let start = Instant::now();
        // One second of burst, then 1 MB more at 10 MB/s: about 0.1 s.
        b.take(10_000_000).await;
        b.take(1_000_000).await;
        let t = start.elapsed();
        assert!(t >= Duration::from_millis(90), "{t:?}");
        assert!(t < Duration::from_secs(2), "{t:?}");
    }
}
