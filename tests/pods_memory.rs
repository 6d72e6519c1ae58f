//! What reading a kubelet `/pods` body costs in memory, before and after the streaming
//! reader: a generated node of 110 pods (~2 MB, `support/kubelet.rs`), the peak of live
//! heap bytes on this thread while it is read.
//!
//! - before: the body held whole (as `KubeletSd` used to collect it) and parsed into the
//!   config's YAML tree, the pods then looked up in that tree;
//! - after: the body streamed through the 64 KiB window in 16 KiB reads (a TLS record's
//!   worth, what `Client::fill` hands over) into `PodListReader`, as `KubeletSd::fetch` does.
//!
//! The target groups built from the pods are the same either way and are left out of both.
//! `cargo test --test pods_memory -- --nocapture` prints the figures (README, Discovery).

// A global allocator needs `unsafe impl`; like tests/parse_alloc.rs, this test file opts out
// of the crate's deny(unsafe_code) only to count bytes.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use promlet::config::yaml;
use promlet::discovery::pods::{self, PodListReader};
use promlet::discovery::{MAX_POD_TOKEN, POD_WINDOW};
use promlet::parse::Window;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    LIVE.with(|l| {
        let now = l.get() + n;
        l.set(now);
        PEAK.with(|p| p.set(p.get().max(now)));
    });
}

fn shrink(n: usize) {
    LIVE.with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; the only addition is thread-local counters, which neither allocate
// (const-initialised Cells) nor touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded with the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: `ptr` came from System.alloc/realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        shrink(layout.size());
        // SAFETY: as for dealloc and alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The peak of live heap bytes above what was live before `f`, while `f` runs.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (PEAK.with(Cell::get) - base, out)
}

/// The body arriving in 16 KiB reads into `window`, read by the streaming reader.
fn streamed(body: &[u8], window: &mut Window) -> Vec<pods::Pod> {
    let mut reader = PodListReader::new();
    let mut fed = 0;
    loop {
        let used = reader
            .feed(window.data(), window.eof())
            .expect("a pod list");
        window.consume(used);
        if reader.is_done() {
            return reader.into_pods();
        }
        let space = window.space().expect("tokens fit");
        let n = space.len().min(16 << 10).min(body.len() - fed);
        space[..n].copy_from_slice(&body[fed..fed + n]);
        fed += n;
        window.filled(n);
    }
}

#[test]
fn a_110_pod_list_streams_in_a_fraction_of_what_the_tree_took() {
    let body = support::kubelet::pod_list(110);
    let (tree_peak, pods_tree) = peak_of(|| {
        // The body as fetch collected it, then the tree over it.
        let held: Vec<u8> = body.as_bytes().to_vec();
        let text = std::str::from_utf8(&held).expect("UTF-8");
        let root = yaml::parse(text).expect("parses").expect("a document");
        // What the pods are made of is looked up in the tree while it lives: here, the
        // count of items, as cheap as lookups get.
        match &root.kind {
            yaml::Kind::Map(entries) => entries.len(),
            _ => 0,
        }
    });
    let (stream_peak, pods) = peak_of(|| {
        let mut window = Window::new(POD_WINDOW, MAX_POD_TOKEN);
        streamed(body.as_bytes(), &mut window)
    });
    let pods_bytes = peak_of(|| pods.clone()).0;
    assert_eq!(pods_tree, 4, "kind, apiVersion, metadata, items");
    assert_eq!(pods.len(), 100);
    println!(
        "kubelet /pods, 110 pods, {} bytes: before (body + YAML tree) peak {} bytes \
         ({:.1}x the body); after (stream) peak {} bytes, of which the kept pods {} bytes",
        body.len(),
        tree_peak,
        tree_peak as f64 / body.len() as f64,
        stream_peak,
        pods_bytes,
    );
    // The stream holds the window and the pods (twice, for their vectors' growth), never the
    // body; the tree took many times the body.
    assert!(
        stream_peak < 2 * pods_bytes + 2 * POD_WINDOW,
        "{stream_peak} bytes"
    );
    assert!(tree_peak > body.len() * 10, "{tree_peak} bytes");
}
