//! The streaming reader against the tree it replaced (`super::super::tree`, the oracle): the
//! same pods on the fixture, on a generated 110-pod node, on odd shapes (duplicate keys,
//! wrong types, items that are not objects) and on random pod lists, whole and streamed
//! through a small window in every chunking; errors with their exact messages.

use super::*;
use crate::config::yaml;
use crate::discovery::tree;
use crate::parse::Window;

#[path = "../../../tests/support/kubelet.rs"]
mod kubelet;

const FIXTURE: &str = include_str!("../../../tests/fixtures/kubelet/pods.json");

/// The pods through the tree, or its error message.
fn oracle(body: &str) -> Result<Vec<Pod>, String> {
    let root = yaml::parse(body)
        .map_err(|e| format!("{}:{}: {}", e.line, e.col, e.reason))?
        .ok_or("empty body")?;
    tree::pods_of(&root)
}

/// The pods of `body` read as `KubeletSd::fetch` reads them: through a window that starts
/// at 16 bytes, filled `chunk` bytes at a time.
fn streamed(body: &[u8], chunk: usize) -> Result<Vec<Pod>, PodListError> {
    let mut window = Window::new(16, 1 << 20);
    let mut reader = PodListReader::new();
    let mut fed = 0;
    loop {
        let used = reader.feed(window.data(), window.eof())?;
        window.consume(used);
        if reader.is_done() {
            return Ok(reader.into_pods());
        }
        let space = window.space().map_err(PodListError::TokenTooLong)?;
        let n = chunk.min(space.len()).min(body.len() - fed);
        space[..n].copy_from_slice(&body[fed..fed + n]);
        fed += n;
        window.filled(n);
    }
}

/// Whole and streamed agree with the oracle on `body`.
fn same_as_tree(body: &str, chunks: &[usize]) -> Vec<Pod> {
    let want = oracle(body).expect("the tree reads it");
    assert_eq!(read(body.as_bytes()).as_ref(), Ok(&want), "whole: {body}");
    for &chunk in chunks {
        assert_eq!(
            streamed(body.as_bytes(), chunk).as_ref(),
            Ok(&want),
            "in chunks of {chunk}: {body}"
        );
    }
    want
}

#[test]
fn the_fixture_reads_as_through_the_tree() {
    let pods = same_as_tree(FIXTURE, &[1, 2, 3, 7, 64, 1000, 1 << 20]);
    assert_eq!(pods.len(), 3, "the pending pod has no IP");
    let root = yaml::parse(FIXTURE).expect("parses").expect("a document");
    assert_eq!(
        Ok(groups(&pods)),
        tree::pod_groups(&root),
        "the same groups, label for label"
    );
}

#[test]
fn a_generated_node_of_110_pods_reads_as_through_the_tree() {
    let body = kubelet::pod_list(110);
    assert!(
        (1_800_000..2_400_000).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    let pods = same_as_tree(&body, &[4096, 65536]);
    assert_eq!(pods.len(), 100, "every 11th is pending");
    // Two ports on the app, a port-less sidecar on every 4th, an init container on every 3rd.
    let targets: usize = (0..110)
        .filter(|i| i % 11 != 10)
        .map(|i| 2 + usize::from(i % 4 == 0) + usize::from(i % 3 == 0))
        .sum();
    assert_eq!(groups(&pods).len(), targets);
}

/// Odd but valid shapes, each read alike by the tree and the stream.
const ODD: &[&str] = &[
    // Duplicate keys: the first counts, whatever its type.
    r#"{"items":[{"status":{"podIP":"10.0.0.1","podIP":"10.0.0.2"},"status":{"podIP":"x"},
      "metadata":{"name":"a","name":"b","labels":{"k":"1","k":"2"},"labels":{"z":"9"}},
      "spec":{"containers":null,"containers":[{"name":"c"}]}}]}"#,
    // Wrong types read as empty; numbers and booleans as their text; null as empty.
    r#"{"kind":"PodList","items":[{"metadata":{"name":7,"namespace":true,"uid":null,
      "labels":{"n":1.50,"b":false,"o":{"x":"y"},"a":["1"],"z":null},"annotations":"no",
      "ownerReferences":{"kind":"ReplicaSet"}},
      "spec":{"nodeName":["edge"],"containers":[{"name":{"x":1},"image":"i","ports":{}},
        {"name":"p","ports":[{"containerPort":"80","protocol":7},{"containerPort":1e3}]}]},
      "status":{"podIP":"10.0.0.1","conditions":[{"type":"Ready"},{"type":"Ready","status":"True"}]}}]}"#,
    // Items that are not objects: a pod none, a container and a port empty ones.
    r#"{"items":[1,"pod",null,[],{"status":{"podIP":"10.0.0.3"},
      "spec":{"containers":[1,[2],{"name":"c","ports":[null,{"containerPort":8}]}],
              "initContainers":["i"]},
      "metadata":{"ownerReferences":[1,{"kind":"A","controller":"true"},{"kind":"B","controller":true,"name":"b"}]}}]}"#,
    // Escaped keys and values; statuses found by name, init ones apart.
    r#"{"items":[{"st\u0061tus":{"podIP":"fd00::1","containerStatuses":[{"name":"i","containerID":"c1"}],
      "initContainerStatuses":[{"name":"i","containerID":"i1"}],"phase":"Run\nning \u00e9"},
      "spec":{"initContainers":[{"name":"i"}],"containers":[{"name":"i"}]},
      "metadata":{"annotations":{"a\/b":"\"q\"","":"empty key"}}}]}"#,
    // Fields in any order, unknown ones at every level, items not an array, an empty list.
    r#"{"x":{"items":[1]},"items":{"a":1},"kind":"PodList"}"#,
    r#"{"apiVersion":"v1","items":[]}"#,
    r#"{}"#,
    // The edge cases of discovery's own tests: no Ready condition, a non-controller owner, an
    // IPv6 pod IP, label names that sanitise alike.
    r#"{"kind":"PodList","items":[{"metadata":{"name":"p","namespace":"n","uid":"u",
    "labels":{"a.b":"1","ä":"2"},
    "ownerReferences":[{"kind":"Node","name":"edge-1"}]},
    "spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]},{"name":"d"}]},
    "status":{"podIP":"fd00::1","phase":"Running"}}]}"#,
];

#[test]
fn odd_shapes_read_as_through_the_tree() {
    for body in ODD {
        same_as_tree(body, &[1, 5]);
    }
    // The first odd document's pod, spelled out.
    let pods = read(ODD[0].as_bytes()).expect("valid");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].pod_ip, "10.0.0.1");
    assert_eq!(pods[0].name, "a");
    assert_eq!(
        pods[0].labels,
        [("k".into(), "1".into()), ("k".into(), "2".into())]
    );
    assert!(pods[0].containers.is_empty());
}

#[test]
fn what_is_not_a_pod_list_fails_with_why() {
    for (body, want) in [
        ("", "empty body"),
        ("  \n", "empty body"),
        ("[]", "not a JSON object"),
        ("\"x\"", "not a JSON object"),
        (
            r#"{"kind":"Status","status":"Failure"}"#,
            "kind \"Status\", not PodList",
        ),
        (
            r#"{"kind":"PodList","items":[{]}"#,
            "byte 28: expected a key or '}', found ']'",
        ),
        (
            r#"{"kind":"PodList","items":["#,
            "byte 27: unexpected end of the document",
        ),
        (r#"{"items":[]} {}"#, "byte 13: data after the document"),
    ] {
        let got = read(body.as_bytes()).expect_err(body);
        assert_eq!(got.to_string(), want, "{body}");
        // What the fetch logs, and keeps the last good targets with.
        let fetch = crate::discovery::KubeletError::Body(got.clone());
        assert_eq!(fetch.to_string(), format!("bad pod list: {want}"));
        assert_eq!(streamed(body.as_bytes(), 3).expect_err(body), got, "{body}");
    }
    // A token longer than the window may grow.
    let long = format!(
        r#"{{"items":[{{"metadata":{{"name":"{}"}}}}]}}"#,
        "x".repeat(100)
    );
    let mut window = Window::new(16, 64);
    let mut reader = PodListReader::new();
    let mut fed = 0;
    let err = loop {
        let used = reader
            .feed(window.data(), window.eof())
            .expect("valid so far");
        window.consume(used);
        match window.space() {
            Err(max) => break PodListError::TokenTooLong(max),
            Ok(space) => {
                let n = space.len().min(long.len() - fed);
                space[..n].copy_from_slice(&long.as_bytes()[fed..fed + n]);
                fed += n;
                window.filled(n);
            }
        }
    };
    assert_eq!(err.to_string(), "a JSON token longer than 64 bytes");
}

/// xorshift64: deterministic, no dependency.
fn rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn pick<'a>(state: &mut u64, from: &[&'a str]) -> &'a str {
    let i = usize::try_from(rand(state) % from.len() as u64).expect("below len");
    from[i]
}

/// A random value for a field: mostly a plausible string, sometimes any other type.
fn random_value(state: &mut u64, plausible: &[&str]) -> String {
    match rand(state) % 10 {
        0 => pick(state, &["1", "-2.5", "true", "false", "null"]).to_owned(),
        1 => pick(state, &["{}", "[]", r#"{"a":[1]}"#, r#"["x"]"#]).to_owned(),
        _ => format!("\"{}\"", pick(state, plausible)),
    }
}

/// Makes a random JSON value.
type Maker<'a> = &'a dyn Fn(&mut u64) -> String;

/// A random object of `fields` (key → value maker), shuffled, with repeats and unknown keys.
fn random_object(state: &mut u64, fields: &[(&str, Maker<'_>)]) -> String {
    let mut entries: Vec<String> = Vec::new();
    for (key, make) in fields {
        for _ in 0..[1, 1, 1, 0, 2][usize::try_from(rand(state) % 5).expect("below 5")] {
            entries.push(format!("\"{key}\":{}", make(state)));
        }
    }
    if rand(state) % 2 == 0 {
        entries.push(r#""unknown":{"nested":[{"name":"decoy","podIP":"9.9.9.9"}]}"#.to_owned());
    }
    for k in (1..entries.len()).rev() {
        let j = usize::try_from(rand(state) % (k as u64 + 1)).expect("below k");
        entries.swap(k, j);
    }
    format!("{{{}}}", entries.join(","))
}

/// An array of 0–3 items made by `make`, sometimes with a non-object item.
fn random_array(state: &mut u64, make: Maker<'_>) -> String {
    let mut items: Vec<String> = (0..rand(state) % 4).map(|_| make(state)).collect();
    if rand(state) % 6 == 0 {
        items.push(pick(state, &["1", "null", "\"s\"", "[]"]).to_owned());
    }
    format!("[{}]", items.join(","))
}

fn random_pod(state: &mut u64) -> String {
    const NAMES: &[&str] = &["a", "b", "web", "app", "é\\u00e9"];
    let text = |from: &'static [&'static str]| move |s: &mut u64| random_value(s, from);
    let map = |s: &mut u64| {
        random_object(
            s,
            &[
                ("app.kubernetes.io/name", &text(&["web", "api"])),
                ("tier", &text(&["x"])),
                ("a_b", &text(&["1"])),
                ("a.b", &text(&["2"])),
            ],
        )
    };
    let port = |s: &mut u64| {
        random_object(
            s,
            &[
                ("name", &text(&["http", "metrics", ""])),
                ("containerPort", &|s: &mut u64| {
                    pick(s, &["80", "8080", "\"9090\""]).to_owned()
                }),
                ("protocol", &text(&["TCP", "UDP"])),
            ],
        )
    };
    let container = |s: &mut u64| {
        random_object(
            s,
            &[
                ("name", &text(NAMES)),
                ("image", &text(&["img:1", "img:2"])),
                ("ports", &|s: &mut u64| random_array(s, &port)),
            ],
        )
    };
    let status = |s: &mut u64| {
        random_object(
            s,
            &[
                ("name", &text(NAMES)),
                ("containerID", &text(&["containerd://1", "containerd://2"])),
            ],
        )
    };
    let condition = |s: &mut u64| {
        random_object(
            s,
            &[
                ("type", &text(&["Ready", "Initialized"])),
                ("status", &text(&["True", "False", "Unknown"])),
            ],
        )
    };
    let owner = |s: &mut u64| {
        random_object(
            s,
            &[
                ("kind", &text(&["ReplicaSet", "Node"])),
                ("name", &text(&["rs", ""])),
                ("controller", &|s: &mut u64| {
                    pick(s, &["true", "false", "\"true\"", "null"]).to_owned()
                }),
            ],
        )
    };
    random_object(
        state,
        &[
            ("metadata", &|s: &mut u64| {
                random_object(
                    s,
                    &[
                        ("name", &text(NAMES)),
                        ("namespace", &text(&["default", "kube-system"])),
                        ("uid", &text(&["u1", "u2"])),
                        ("labels", &map),
                        ("annotations", &map),
                        ("ownerReferences", &|s: &mut u64| random_array(s, &owner)),
                    ],
                )
            }),
            ("spec", &|s: &mut u64| {
                random_object(
                    s,
                    &[
                        ("nodeName", &text(&["edge-1"])),
                        ("containers", &|s: &mut u64| random_array(s, &container)),
                        ("initContainers", &|s: &mut u64| random_array(s, &container)),
                    ],
                )
            }),
            ("status", &|s: &mut u64| {
                random_object(
                    s,
                    &[
                        ("phase", &text(&["Running", "Pending"])),
                        ("podIP", &text(&["10.0.0.1", "fd00::1", ""])),
                        ("hostIP", &text(&["192.168.1.2"])),
                        ("conditions", &|s: &mut u64| random_array(s, &condition)),
                        ("containerStatuses", &|s: &mut u64| random_array(s, &status)),
                        ("initContainerStatuses", &|s: &mut u64| {
                            random_array(s, &status)
                        }),
                    ],
                )
            }),
        ],
    )
}

#[test]
fn random_pod_lists_read_as_through_the_tree() {
    let mut state = 0x2545_F491_4F6C_DD1D;
    let mut kept = 0;
    for _ in 0..400 {
        let body = random_object(
            &mut state,
            &[
                ("kind", &|_: &mut u64| "\"PodList\"".to_owned()),
                ("items", &|s: &mut u64| random_array(s, &random_pod)),
            ],
        );
        let chunk = 1 + usize::try_from(rand(&mut state) % 40).expect("below 40");
        let pods = same_as_tree(&body, &[chunk]);
        kept += pods.len();
        let root = yaml::parse(&body).expect("parses").expect("a document");
        assert_eq!(Ok(groups(&pods)), tree::pod_groups(&root), "{body}");
    }
    assert!(kept > 100, "the generator makes pods with IPs: {kept}");
}
