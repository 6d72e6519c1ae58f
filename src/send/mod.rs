//! Remote write (DESIGN.md step 7): what one sender thread per `remote_write` entry sends.
//!
//! This slice holds the wire encoding ([`encode`]); the sender thread, batching, retries and
//! the HTTP client come with the rest of issue 6.

pub mod encode;
