//! Client-side request budget per connected account.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

/// At most `per_second` requests in any one-second window, shared by every task that holds
/// it (one per connected account).
///
/// A sliding log of the last `per_second` send slots: a caller reserves the earliest slot that
/// keeps the window within budget, then sleeps until it. Slots are handed out in order under
/// the lock, so concurrent callers never over-book, and a burst up to the budget is allowed
/// after a quiet second.
#[derive(Debug)]
pub struct RateBudget {
    per_second: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    slots: VecDeque<Instant>,
    /// No slot before this: Stripe answered `429` to one of the account's requests.
    paused_until: Option<Instant>,
    /// Every slot handed out, when recording is on (tests measure the rate from it).
    log: Option<Vec<Instant>>,
}

impl RateBudget {
    /// A budget of `per_second` requests per second (at least 1).
    pub fn new(per_second: u32) -> Self {
        RateBudget {
            per_second: usize::try_from(per_second.max(1)).unwrap_or(usize::MAX),
            state: Mutex::new(State::default()),
        }
    }

    /// Requests allowed per second.
    pub fn per_second(&self) -> usize {
        self.per_second
    }

    /// Reserve the next slot; returns it without waiting.
    pub fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = state.paused_until.map_or(now, |until| now.max(until));
        let slot = if state.slots.len() < self.per_second {
            // Slots are non-decreasing, so a new one never precedes the last one handed out.
            state.slots.back().map_or(now, |last| now.max(*last))
        } else {
            let oldest = state.slots.pop_front().unwrap_or(now);
            now.max(oldest + WINDOW)
        };
        state.slots.push_back(slot);
        if let Some(log) = state.log.as_mut() {
            log.push(slot);
        }
        slot
    }

    /// Hands out no slot for `delay` from now: Stripe throttled one of the account's requests,
    /// so the account's other requests wait with it instead of being throttled in turn (each
    /// `429` costs one of a request's attempts).
    pub fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Wait for a slot.
    pub async fn acquire(&self) {
        let slot = self.reserve();
        tokio::time::sleep_until(slot).await;
    }

    /// Start or stop keeping every slot handed out.
    pub fn record(&self, on: bool) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.log = on.then(Vec::new);
    }

    /// The slots handed out since recording started.
    pub fn recorded(&self) -> Vec<Instant> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.log.clone().unwrap_or_default()
    }
}

/// The most slots found in any window `[t, t + 1 s)` of a sorted list.
pub fn max_in_any_second(sorted: &[Instant]) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= WINDOW {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_over_budget_under_contention() {
        // Real time (about 1.6 s): tokio's paused clock needs the `test-util` feature.
        let budget = std::sync::Arc::new(RateBudget::new(5));
        budget.record(true);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = budget.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    b.acquire().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut slots = budget.recorded();
        assert_eq!(slots.len(), 12);
        slots.sort();
        assert_eq!(max_in_any_second(&slots), 5);
    }

    #[test]
    fn a_pause_holds_every_slot_back_and_a_shorter_one_does_not_shorten_it() {
        let budget = RateBudget::new(100);
        let before = budget.reserve();
        budget.pause(Duration::from_millis(300));
        budget.pause(Duration::from_millis(100));
        let paused = Instant::now() + Duration::from_millis(250);
        let (a, b) = (budget.reserve(), budget.reserve());
        assert!(
            before < paused,
            "a slot handed out before the pause is not moved"
        );
        assert!(a >= paused && b >= a, "{a:?} {b:?} against {paused:?}");
        // Within budget: the slots come as soon as the pause ends, not a window later.
        assert!(b < paused + Duration::from_millis(200));
    }

    #[test]
    fn window_count() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(max_in_any_second(&[]), 0);
        assert_eq!(max_in_any_second(&[ms(0), ms(999), ms(1000), ms(1500)]), 3);
        assert_eq!(max_in_any_second(&[ms(0), ms(1000), ms(2000)]), 1);
    }
}
