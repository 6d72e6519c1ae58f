//! Remote write (DESIGN.md step 7): what one sender thread per `remote_write` entry sends.
//!
//! - [`encode`]: the wire format, `prometheus.WriteRequest` by hand + snappy.
//! - [`sender`]: the thread per endpoint: ring → requests of `max_samples_per_send` → POST
//!   (ureq, keep-alive, TLS, proxy, auth); acknowledgements move the ring cursor.
//! - [`backoff`]: how long a failed request waits: capped exponential backoff with jitter,
//!   or what `Retry-After` asks.

pub mod backoff;
pub mod encode;
pub mod sender;
