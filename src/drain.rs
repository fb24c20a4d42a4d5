//! Values handed out to requests that must outlive their replacement until
//! every holder has let go: a credential generation, an OpenBao session.
//!
//! Holding costs one atomic increment (a `TaskTracker` token); retiring
//! waits on the tracker, woken by the last holder, never by polling.

use std::{ops::Deref, sync::Arc, time::Duration};

use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

/// A value whose holders are counted.
pub struct Tracked<T> {
    value: T,
    holders: TaskTracker,
}

/// One holder's claim on a [`Tracked`] value; released on drop.
pub struct Hold<T> {
    tracked: Arc<Tracked<T>>,
    _token: TaskTrackerToken,
}

impl<T> Tracked<T> {
    pub fn new(value: T) -> Arc<Self> {
        Arc::new(Self {
            value,
            holders: TaskTracker::new(),
        })
    }

    /// A claim that keeps the value from being retired until dropped.
    pub fn hold(self: &Arc<Self>) -> Hold<T> {
        Hold {
            _token: self.holders.token(),
            tracked: self.clone(),
        }
    }

    /// How many holders are left.
    pub fn holders(&self) -> usize {
        self.holders.len()
    }

    /// Waits until no holder is left, up to `timeout`. Returns the number
    /// still holding when the timeout hit (0 when drained).
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.holders.close();
        match tokio::time::timeout(timeout, self.holders.wait()).await {
            Ok(()) => 0,
            Err(_) => self.holders.len(),
        }
    }
}

impl<T> Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Deref for Hold<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.tracked.value
    }
}

impl<T> Hold<T> {
    /// The tracked value this claim is on.
    pub fn tracked(&self) -> &Arc<Tracked<T>> {
        &self.tracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn drain_returns_when_the_last_holder_lets_go() {
        let t = Tracked::new(7);
        let a = t.hold();
        let b = t.hold();
        assert_eq!(t.holders(), 2);
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(b);
        });
        assert_eq!(t.drain(Duration::from_secs(5)).await, 0);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "returned before the last holder: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "woken late: {took:?}");
    }

    #[tokio::test]
    async fn drain_reports_the_holders_left_at_the_timeout() {
        let t = Tracked::new("generation");
        let _held = t.hold();
        assert_eq!(t.drain(Duration::from_millis(20)).await, 1);
    }

    #[tokio::test]
    async fn drain_with_no_holder_is_immediate() {
        let t = Tracked::new(());
        assert_eq!(t.drain(Duration::from_secs(5)).await, 0);
    }
}
