//! Requests per API key: a keyed token bucket (governor).

use std::time::Duration;

/// Requests per API key per second or minute (a burst of as many), or none.
pub struct RateLimit {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    pub fn per_second(rate: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(rate)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n))),
        }
    }

    pub fn per_minute(rate: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(rate)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_minute(n))),
        }
    }

    pub fn unlimited() -> Self {
        Self { limiter: None }
    }

    /// `Err(wait)` when the key must wait before its next request.
    pub(crate) fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}
