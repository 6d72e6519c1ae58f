//! Per-scrape limits, checked where Prometheus 2.42's scrape loop checks them (`scrape.go`):
//!
//! - `body_size_limit`: on the uncompressed body; a body of *exactly* the limit already fails
//!   (Prometheus reads at most `limit` bytes and fails when it got that many).
//! - `label_limit`, `label_name_length_limit`, `label_value_length_limit`: on each series' final
//!   label set (after the target's labels and `metric_relabel_configs`), lengths in bytes (a
//!   live 2.42 refuses 40 × `ü` under a limit of 40); the first breach fails the scrape.
//! - `sample_limit`: on the samples appended (after relabeling dropped some); parsing goes on to
//!   the end of the body, then the scrape fails.
//!
//! Every check is allocation-free; the error is built only when a limit is hit.

use std::fmt;

use crate::config::Limits;
use crate::labels::LabelSet;

/// Which limit a scrape broke, with Prometheus' figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// The body reached `body_size_limit` bytes.
    BodySize {
        /// The limit, bytes.
        limit: u64,
    },
    /// More samples than `sample_limit` after relabeling.
    Samples {
        /// Samples appended.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A series with more labels than `label_limit`.
    Labels {
        /// Metric name (at most 50 bytes).
        metric: String,
        /// Labels on the series.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A label name longer than `label_name_length_limit`.
    NameLength {
        /// Metric name (at most 50 bytes).
        metric: String,
        /// The label name (at most 50 bytes).
        name: String,
        /// Its length in bytes.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A label value longer than `label_value_length_limit` bytes.
    ValueLength {
        /// Metric name (at most 50 bytes).
        metric: String,
        /// The label name (at most 50 bytes).
        name: String,
        /// Its value's length in bytes.
        length: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::BodySize { limit } => write!(f, "body size limit exceeded ({limit} bytes)"),
            LimitError::Samples { count, limit } => {
                write!(f, "sample limit exceeded ({count} samples, limit {limit})")
            }
            LimitError::Labels { metric, count, limit } => write!(
                f,
                "label_limit exceeded (metric: {metric}, number of labels: {count}, limit: {limit})"
            ),
            LimitError::NameLength { metric, name, length, limit } => write!(
                f,
                "label_name_length_limit exceeded (metric: {metric}, label name: {name}, length: {length}, limit: {limit})"
            ),
            LimitError::ValueLength { metric, name, length, limit } => write!(
                f,
                "label_value_length_limit exceeded (metric: {metric}, label name: {name}, length: {length}, limit: {limit})"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

fn short(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(50)]).into_owned()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Checks a body of `bytes` (uncompressed) against `body_size_limit` (0: none).
pub fn check_body_size(bytes: u64, limits: &Limits) -> Result<(), LimitError> {
    let limit = limits.body_size_limit;
    if limit > 0 && bytes >= limit {
        return Err(LimitError::BodySize { limit });
    }
    Ok(())
}

/// Checks one series' final labels against the label limits (0: none).
pub fn check_labels(set: &LabelSet, limits: &Limits) -> Result<(), LimitError> {
    let metric = || short(set.get(b"__name__").unwrap_or(b""));
    if limits.label_limit > 0 && count(set.len()) > limits.label_limit {
        return Err(LimitError::Labels {
            metric: metric(),
            count: count(set.len()),
            limit: limits.label_limit,
        });
    }
    if limits.label_name_length_limit == 0 && limits.label_value_length_limit == 0 {
        return Ok(());
    }
    for (name, value) in set.iter() {
        if limits.label_name_length_limit > 0 && count(name.len()) > limits.label_name_length_limit
        {
            return Err(LimitError::NameLength {
                metric: metric(),
                name: short(name),
                length: count(name.len()),
                limit: limits.label_name_length_limit,
            });
        }
        // Bytes, as Prometheus 2.42's len(l.Value) (later versions count characters).
        if limits.label_value_length_limit > 0
            && count(value.len()) > limits.label_value_length_limit
        {
            return Err(LimitError::ValueLength {
                metric: metric(),
                name: short(name),
                length: count(value.len()),
                limit: limits.label_value_length_limit,
            });
        }
    }
    Ok(())
}

/// Counts a scrape's appended samples against `sample_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleCounter {
    count: u64,
    limit: u64,
}

impl SampleCounter {
    /// A counter for one scrape.
    pub fn new(limits: &Limits) -> Self {
        SampleCounter {
            count: 0,
            limit: limits.sample_limit,
        }
    }

    /// Counts one appended sample (staleness markers do not count, as in Prometheus'
    /// limitAppender).
    pub fn add(&mut self, value: f64) {
        if value.to_bits() != crate::parse::float::STALE_NAN_BITS {
            self.count += 1;
        }
    }

    /// At the end of the body: the scrape fails if the limit was passed.
    pub fn finish(&self) -> Result<u64, LimitError> {
        if self.limit > 0 && self.count > self.limit {
            return Err(LimitError::Samples {
                count: self.count,
                limit: self.limit,
            });
        }
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        let mut s = LabelSet::new();
        for (k, v) in pairs {
            s.push(k.as_bytes(), v.as_bytes());
        }
        s.sort();
        s
    }

    #[test]
    fn a_body_of_exactly_the_limit_fails() {
        let l = Limits {
            body_size_limit: 100,
            ..limits()
        };
        assert!(check_body_size(99, &l).is_ok());
        assert_eq!(
            check_body_size(100, &l),
            Err(LimitError::BodySize { limit: 100 })
        );
        assert!(
            check_body_size(u64::MAX, &limits()).is_ok(),
            "0 means no limit"
        );
    }

    #[test]
    fn label_limits_count_every_label_and_bytes() {
        let s = set(&[("__name__", "m"), ("job", "j"), ("abcdefghij", "üüü")]);
        assert!(check_labels(
            &s,
            &Limits {
                label_limit: 3,
                ..limits()
            }
        )
        .is_ok());
        assert_eq!(
            check_labels(
                &s,
                &Limits {
                    label_limit: 2,
                    ..limits()
                }
            )
            .map_err(|e| e.to_string()),
            Err("label_limit exceeded (metric: m, number of labels: 3, limit: 2)".to_owned())
        );
        assert!(check_labels(
            &s,
            &Limits {
                label_name_length_limit: 10,
                ..limits()
            }
        )
        .is_ok());
        assert!(matches!(
            check_labels(
                &s,
                &Limits {
                    label_name_length_limit: 9,
                    ..limits()
                }
            ),
            Err(LimitError::NameLength { length: 10, .. })
        ));
        // "üüü" is 3 characters but 6 bytes.
        assert!(check_labels(
            &s,
            &Limits {
                label_value_length_limit: 6,
                ..limits()
            }
        )
        .is_ok());
        assert!(matches!(
            check_labels(
                &s,
                &Limits {
                    label_value_length_limit: 5,
                    ..limits()
                }
            ),
            Err(LimitError::ValueLength { length: 6, .. })
        ));
    }

    #[test]
    fn the_sample_limit_ignores_staleness_markers() {
        let mut c = SampleCounter::new(&Limits {
            sample_limit: 2,
            ..limits()
        });
        c.add(1.0);
        c.add(f64::from_bits(crate::parse::float::STALE_NAN_BITS));
        c.add(2.0);
        assert_eq!(c.finish(), Ok(2));
        c.add(3.0);
        assert_eq!(c.finish(), Err(LimitError::Samples { count: 3, limit: 2 }));
    }
}
