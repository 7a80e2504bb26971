//! When to retry a refused request. A pure function of the answer and the time already spent, so
//! the policy is tested without a server.
//!
//! Only `429 Too Many Requests` (the learner queue is full) is retried. By default `Retry-After`
//! is an upper bound, not a fixed pause: the client retries after a short backoff that doubles up
//! to it, because a queue drained by a learner at thousands of samples per second has room again
//! within milliseconds, and a whole-second pause (the header's granularity) would leave the
//! learner idle. `strict_retry_after` waits exactly what the server asks.

use std::time::Duration;

/// What to do after a non-success answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the same request again after this pause.
    Retry(Duration),
    /// The answer is final (not a 429): report it.
    Fail,
    /// The server kept refusing for longer than the policy's patience.
    GiveUp,
}

/// How a client retries a request refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First pause, and the floor of every pause (no busy loop on `Retry-After: 0`).
    pub min_backoff: Duration,
    /// Largest pause when the server sends no usable `Retry-After`.
    pub max_backoff: Duration,
    /// Wait exactly `Retry-After` instead of treating it as an upper bound.
    pub strict_retry_after: bool,
    /// Give up once the same request has been refused for this long.
    pub patience: Duration,
}

/// HTTP status of "learner queue full".
pub const TOO_MANY_REQUESTS: u16 = 429;

impl RetryPolicy {
    /// Decides what follows an answer with `status`, given its `Retry-After` (already parsed),
    /// the number of retries of this request so far (`attempt`, 0 after the first refusal) and
    /// how long ago it was first refused.
    ///
    /// The pause is `min_backoff · 2^attempt`, capped by `max_backoff` and by `Retry-After` (or
    /// exactly `Retry-After` when strict), never below `min_backoff` and never past the patience.
    pub fn decide(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        attempt: u32,
        refused_for: Duration,
    ) -> Decision {
        if status != TOO_MANY_REQUESTS {
            return Decision::Fail;
        }
        let Some(left) = self
            .patience
            .checked_sub(refused_for)
            .filter(|d| !d.is_zero())
        else {
            return Decision::GiveUp;
        };
        let backoff = self
            .min_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        let pause = match retry_after {
            Some(asked) if self.strict_retry_after => asked,
            Some(asked) => backoff.min(asked),
            None => backoff,
        };
        Decision::Retry(pause.max(self.min_backoff).min(left))
    }
}

/// Parses a `Retry-After` value given in seconds (`"1"`, or leniently `"0.25"`). An HTTP date or
/// anything else gives `None`, and the caller falls back to its backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min_backoff: 10 * MS,
            max_backoff: 1000 * MS,
            strict_retry_after: false,
            patience: Duration::from_secs(60),
        }
    }

    #[test]
    fn only_429_is_retried() {
        for status in [200, 202, 400, 413, 415, 422, 500, 503] {
            assert_eq!(
                policy().decide(status, Some(MS), 0, Duration::ZERO),
                Decision::Fail,
                "{status}"
            );
        }
        assert!(matches!(
            policy().decide(429, None, 0, Duration::ZERO),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let pauses: Vec<_> = (0..10)
            .map(|attempt| p.decide(429, None, attempt, Duration::ZERO))
            .collect();
        let expected: Vec<_> = [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
            .iter()
            .map(|&ms| Decision::Retry(ms * MS))
            .collect();
        assert_eq!(pauses, expected);
        // Huge attempt counts neither overflow nor exceed the cap.
        assert_eq!(
            p.decide(429, None, u32::MAX, Duration::ZERO),
            Decision::Retry(1000 * MS)
        );
    }

    #[test]
    fn retry_after_caps_the_backoff_unless_strict() {
        let p = policy();
        let one_second = Some(Duration::from_secs(1));
        assert_eq!(
            p.decide(429, one_second, 0, Duration::ZERO),
            Decision::Retry(10 * MS)
        );
        assert_eq!(
            p.decide(429, Some(30 * MS), 5, Duration::ZERO),
            Decision::Retry(30 * MS)
        );
        let strict = RetryPolicy {
            strict_retry_after: true,
            ..p
        };
        assert_eq!(
            strict.decide(429, one_second, 0, Duration::ZERO),
            Decision::Retry(Duration::from_secs(1))
        );
        // Strict still falls back to the backoff without a header.
        assert_eq!(
            strict.decide(429, None, 1, Duration::ZERO),
            Decision::Retry(20 * MS)
        );
    }

    #[test]
    fn zero_retry_after_still_pauses() {
        for strict_retry_after in [false, true] {
            let p = RetryPolicy {
                strict_retry_after,
                ..policy()
            };
            assert_eq!(
                p.decide(429, Some(Duration::ZERO), 3, Duration::ZERO),
                Decision::Retry(10 * MS)
            );
        }
    }

    #[test]
    fn patience_bounds_pauses_and_retries() {
        let p = RetryPolicy {
            strict_retry_after: true,
            ..policy()
        };
        let long_ago = Duration::from_secs(59);
        assert_eq!(
            p.decide(429, Some(Duration::from_secs(3600)), 0, long_ago),
            Decision::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(429, None, 0, Duration::from_secs(60)),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(429, None, 0, Duration::from_secs(61)),
            Decision::GiveUp
        );
        // A final answer is reported as such even after the patience ran out.
        assert_eq!(
            p.decide(503, None, 0, Duration::from_secs(61)),
            Decision::Fail
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("0.25"), Some(250 * MS));
        for bad in [
            "",
            "-1",
            "soon",
            "NaN",
            "inf",
            "1e400",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }
}
