//! The ring file changed under a running ring (module docs, "The file under promlet"):
//! truncated (found by the producer, a consumer or the syncer), removed; how a new file is
//! made (`ring.new`); what inspection says of a file that is not a ring; sync failures
//! logged once per kind and counted.

use super::*;

fn truncate(dir: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(dir.join(RING_FILE))
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}

fn file_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(RING_FILE)).expect("stat").len()
}

fn filled(name: &str) -> (TempDir, Ring, Vec<Rec>) {
    let dir = TempDir::new(name);
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let written: Vec<Rec> = (0..40)
        .map(|i| put(&mut ring, 1, &payload(i, 50)))
        .collect();
    ring.sync().expect("sync");
    (dir, ring, written)
}

#[test]
fn a_truncated_file_found_by_the_producer_gets_its_length_back_and_the_records_go() {
    let (dir, mut ring, written) = filled("trunc-producer");
    let head = ring.head();
    truncate(&dir.0, 0);
    // The append checks the file before it touches the mapping: no SIGBUS.
    let after = put(&mut ring, 2, &payload(99, 30));
    assert_eq!(file_len(&dir.0), SIZE, "length restored");
    assert_eq!(ring.stats().file_truncations, 1);
    assert_eq!(after.0, head, "the head goes on where it was");
    assert_eq!(
        ring.tail(),
        head,
        "the records before the truncation are given up"
    );
    assert_eq!(all(&mut ring), vec![after]);
    assert!(!written.is_empty());
    // The header copies were zeros: the next sync writes one, and a restart finds it.
    ring.sync().expect("sync");
    drop(ring);
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    assert_eq!(all(&mut ring), vec![after]);
    assert_eq!(ring.stats().damaged_skips, 0);
}

#[test]
fn a_truncated_file_found_by_a_consumer_or_the_syncer_is_restored_once() {
    let (dir, mut ring, _) = filled("trunc-readers");
    let mut c = ring.consumer(0xbeef).expect("consumer");
    let syncer = ring.syncer();
    truncate(&dir.0, 5000);
    assert!(c.next_batch().is_none(), "nothing to read, no fault");
    assert_eq!(file_len(&dir.0), SIZE);
    assert!(syncer.sync().is_ok());
    truncate(&dir.0, 0);
    assert!(syncer.sync().is_ok(), "the syncer restores it too");
    assert_eq!(file_len(&dir.0), SIZE);
    assert_eq!(syncer.stats().file_truncations, 2);
    assert_eq!(syncer.stats().sync_failures, 0);
    let r = put(&mut ring, 1, &payload(7, 20));
    assert_eq!(all(&mut ring), vec![r]);
    assert_eq!(
        ring.stats().file_truncations,
        2,
        "the producer found it restored"
    );
    assert_eq!(ring.stats().damaged_skips, 0);
}

#[test]
fn a_truncated_file_whose_length_cannot_be_restored_is_never_touched_again() {
    let (dir, mut ring, _) = filled("trunc-broken");
    let mut c = ring.consumer(0xbeef).expect("consumer");
    let syncer = ring.syncer();
    ring.w
        .shared
        .watch
        .fail_restore
        .store(true, Ordering::Relaxed);
    truncate(&dir.0, 0);
    match ring.append(1, b"x") {
        Err(e @ WalError::Truncated(_)) => {
            let msg = e.to_string();
            let want = format!(
                "{} was truncated under promlet",
                dir.0.join(RING_FILE).display()
            );
            assert!(msg.contains(&want), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.next_batch().is_none());
    assert!(syncer.sync().is_err());
    assert!(ring.append(1, b"x").is_err(), "still refused");
    assert_eq!(ring.read(0), Found::End);
    let stats = ring.stats();
    assert_eq!((stats.file_truncations, stats.sync_failures), (1, 1));
    assert_eq!(
        file_len(&dir.0),
        0,
        "the mapping was not touched, the file not grown"
    );
}

#[test]
fn a_removed_file_is_counted_once_and_the_ring_goes_on() {
    let (dir, mut ring, mut written) = filled("removed");
    std::fs::remove_file(dir.0.join(RING_FILE)).expect("rm");
    written.push(put(&mut ring, 1, &payload(1, 10)));
    written.push(put(&mut ring, 1, &payload(2, 10)));
    ring.sync().expect("sync the unlinked file");
    assert_eq!(all(&mut ring), written);
    let stats = ring.stats();
    assert_eq!((stats.file_removals, stats.file_truncations), (1, 0));
}

#[test]
fn a_stale_ring_new_and_an_empty_ring_are_replaced_by_an_allocated_ring() {
    let dir = TempDir::new("ring-new");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join(NEW_RING_FILE), b"half made").expect("ring.new");
    std::fs::write(dir.0.join(RING_FILE), b"").expect("empty ring");
    let ring = Ring::open(&dir.0, SIZE).expect("open");
    assert_eq!(file_len(&dir.0), SIZE);
    assert!(!dir.0.join(NEW_RING_FILE).exists(), "ring.new removed");
    drop(ring);
}

#[test]
fn a_failed_start_leaves_no_ring_and_no_lock() {
    let dir = TempDir::new("failed-start");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    // A directory where `ring.new` goes: it can be neither removed nor created.
    std::fs::create_dir_all(dir.0.join(NEW_RING_FILE).join("x")).expect("blocker");
    let e = Ring::open(&dir.0, SIZE).expect_err("cannot make the ring");
    assert!(e.to_string().contains(NEW_RING_FILE), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from(NEW_RING_FILE)],
        "{left:?}"
    );
}

#[test]
fn inspection_of_a_zeroed_file_says_it_is_not_a_ring() {
    let dir = TempDir::new("zeros");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join(RING_FILE), vec![0u8; SIZE as usize]).expect("zeros");
    match Ring::open_read_only(&dir.0) {
        Err(e @ WalError::Foreign(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("is not a promlet ring"), "{msg}");
            assert!(
                msg.contains(&dir.0.join(RING_FILE).display().to_string()),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Opening it to write makes it a new ring, as an allocated file is.
    drop(Ring::open(&dir.0, SIZE).expect("a new ring"));
    Ring::open_read_only(&dir.0).expect("a ring now");
}

#[test]
fn a_sync_failure_is_counted_each_time_and_logged_once_per_kind() {
    let (_dir, mut ring, _) = filled("sync-fail");
    let syncer = ring.syncer();
    let shared = Arc::clone(&ring.w.shared);
    let inject = |errno: Option<i32>| {
        *shared.watch.inject.lock().expect("inject") = errno;
    };
    let eio = rustix::io::Errno::IO.raw_os_error();
    let erofs = rustix::io::Errno::ROFS.raw_os_error();
    inject(Some(eio));
    let mut logged = Vec::new();
    for _ in 0..3 {
        put(&mut ring, 1, &payload(3, 10));
        logged.push(syncer.sync_logged());
    }
    inject(Some(erofs));
    put(&mut ring, 1, &payload(4, 10));
    logged.push(syncer.sync_logged());
    inject(None);
    logged.push(syncer.sync_logged());
    logged.push(syncer.sync_logged());
    // EIO once, EROFS once, working again once.
    assert_eq!(logged, [true, false, false, true, true, false]);
    assert_eq!(syncer.stats().sync_failures, 4);
    let e = ring.sync();
    assert!(e.is_ok(), "{e:?}");
    // The mapping went on through the failures: every record reads back.
    assert_eq!(all(&mut ring).len(), 40 + 4);
}
