//! Stopping with a receiver that takes a request and never answers (issue 17): promlet exits
//! 0 within a few seconds of SIGTERM, not after the request's `remote_timeout` (30 s), and
//! the next start sends the request again, so nothing is lost by leaving it behind.

mod support;

use std::time::{Duration, Instant};

use support::delivery::start_target;
use support::peers::{Promlet, TempDir};
use support::receiver::{Answer, Scripted};

fn config(target: u16, url: &str) -> String {
    format!(
        "scrape_configs:\n  - job_name: stop\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\nremote_write:\n  - url: {url}\n    queue_config: {{batch_send_deadline: 1s}}\n"
    )
}

/// The counter values of the requests `rx` read after `since`.
fn counter_values(rx: &Scripted, since: Instant) -> Vec<f64> {
    rx.writes()
        .iter()
        .filter(|p| p.at > since)
        .flat_map(|p| &p.series)
        .filter(|(labels, _)| {
            labels.get("__name__").map(String::as_str) == Some("promlet_delivery_counter")
        })
        .flat_map(|(_, samples)| samples.iter().map(|s| f64::from_bits(s.0)))
        .collect()
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_the_stop() {
    let dir = TempDir::new("stop-silent");
    let (target, _served) = start_target();
    // The first request is answered after two minutes (never, for this test); later ones at
    // once.
    let rx = Scripted::start(
        vec![Answer::ok().after(Duration::from_secs(120))],
        Answer::ok(),
    );
    let promlet = Promlet::start(&dir.0, &config(target, &rx.url()), &[]);
    promlet.wait_for(Duration::from_secs(20), "a request in flight", || {
        !rx.writes().is_empty()
    });
    let log = dir.join("promlet.log");
    let stopping = Instant::now();
    let code = promlet.stop();
    let took = stopping.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("stop with a silent receiver: exit {code} after {took:?}");
    assert_eq!(code, 0, "{text}");
    assert!(
        took < Duration::from_secs(15),
        "the stop took {took:?} (remote_timeout is 30 s)\n{text}"
    );
    assert!(text.contains("no answer for"), "{text}");

    // The next start sends the request the receiver never answered again: value 1 included.
    let restarted = Instant::now();
    let promlet = Promlet::start(&dir.0, &config(target, &rx.url()), &[]);
    promlet.wait_for(
        Duration::from_secs(20),
        "the first scrape sent again",
        || counter_values(&rx, restarted).contains(&1.0),
    );
    assert_eq!(promlet.stop(), 0);
}
