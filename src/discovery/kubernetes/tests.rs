//! Role `node`'s labels against hand-written sets (node.go's semantics), watch streams read
//! in every chunking, the in-cluster config, and how an informer applies events.

use std::collections::BTreeMap;

use super::*;
use crate::config::TargetGroup;

type Labels = BTreeMap<String, String>;

fn labels_of(g: &TargetGroup) -> Labels {
    assert_eq!(g.targets.len(), 1, "{g:?}");
    assert!(
        g.labels.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted: {g:?}"
    );
    let mut m: Labels = g.labels.iter().cloned().collect();
    m.insert("__address__".to_owned(), g.targets[0].clone());
    m
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The nodes of a `NodeList` body, read through a window of `chunk`-byte fills.
fn nodes(body: &str, chunk: usize) -> Result<Vec<Pod>, PodListError> {
    let mut reader = PodListReader::of(Doc::NodeList);
    let bytes = body.as_bytes();
    let mut window = Window::new(16, 1 << 20);
    let mut fed = 0;
    loop {
        let used = reader.feed(window.data(), window.eof())?;
        window.consume(used);
        if reader.is_done() {
            assert_eq!(reader.list_version(), "4711");
            return Ok(reader.into_pods());
        }
        let space = window.space().map_err(PodListError::TokenTooLong)?;
        let n = chunk.min(space.len()).min(bytes.len() - fed);
        space[..n].copy_from_slice(&bytes[fed..fed + n]);
        fed += n;
        window.filled(n);
    }
}

const NODES: &str = r#"{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"4711"},
"items":[
 {"metadata":{"name":"edge-1","uid":"0b6e","resourceVersion":"4700",
   "labels":{"kubernetes.io/arch":"arm64","node-role.kubernetes.io/control-plane":"true"},
   "annotations":{"k3s.io/node-args":"[\"server\"]"},
   "managedFields":[{"manager":"k3s","fieldsV1":{"f:status":{"f:addresses":{}}}}]},
  "spec":{"podCIDR":"10.42.0.0/24","providerID":"k3s://edge-1"},
  "status":{"addresses":[{"type":"Hostname","address":"edge-1"},
     {"type":"InternalIP","address":"192.168.1.21"},{"type":"InternalIP","address":"fd00::21"}],
   "daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},
   "conditions":[{"type":"Ready","status":"True"}]}},
 {"metadata":{"name":"edge-2"},
  "status":{"addresses":[{"type":"Hostname","address":"edge-2"},{"type":"ExternalDNS","address":"edge-2.example"}]}},
 {"metadata":{"name":"edge-3"},"status":{"addresses":[{"type":"InternalDNS","address":"fd00::3"}],
   "daemonEndpoints":{"kubeletEndpoint":{"Port":10250}}}},
 {"metadata":{"name":"lonely"},"status":{"addresses":[]}}
]}"#;

#[test]
fn nodes_get_build_node_s_labels_and_address() {
    for chunk in [1, 3, 17, 1 << 20] {
        let nodes = nodes(NODES, chunk).expect("a node list");
        assert_eq!(nodes.len(), 4, "nodes are kept without a pod IP");
        let groups: Vec<Option<TargetGroup>> = nodes.iter().map(node_group).collect();
        let edge1 = labels_of(groups[0].as_ref().expect("edge-1 has a target"));
        // Written from node.go: InternalIP first (its first address), the kubelet's port,
        // `instance` the node's name, one `node_address_<type>` per type.
        assert_eq!(
            edge1,
            labels(&[
                ("__address__", "192.168.1.21:10250"),
                ("__meta_kubernetes_node_address_Hostname", "edge-1"),
                ("__meta_kubernetes_node_address_InternalIP", "192.168.1.21"),
                (
                    "__meta_kubernetes_node_annotation_k3s_io_node_args",
                    "[\"server\"]"
                ),
                (
                    "__meta_kubernetes_node_annotationpresent_k3s_io_node_args",
                    "true"
                ),
                ("__meta_kubernetes_node_label_kubernetes_io_arch", "arm64"),
                (
                    "__meta_kubernetes_node_label_node_role_kubernetes_io_control_plane",
                    "true"
                ),
                (
                    "__meta_kubernetes_node_labelpresent_kubernetes_io_arch",
                    "true"
                ),
                (
                    "__meta_kubernetes_node_labelpresent_node_role_kubernetes_io_control_plane",
                    "true"
                ),
                ("__meta_kubernetes_node_name", "edge-1"),
                ("__meta_kubernetes_node_provider_id", "k3s://edge-1"),
                ("instance", "edge-1"),
            ]),
            "in chunks of {chunk}"
        );
        // ExternalDNS before Hostname; no kubelet endpoint: port 0, as Go's zero value.
        let edge2 = labels_of(groups[1].as_ref().expect("edge-2 has a target"));
        assert_eq!(edge2["__address__"], "edge-2.example:0");
        assert_eq!(edge2["__meta_kubernetes_node_provider_id"], "");
        assert_eq!(
            edge2["__meta_kubernetes_node_address_ExternalDNS"],
            "edge-2.example"
        );
        // An IPv6 address is bracketed, as net.JoinHostPort does.
        let edge3 = labels_of(groups[2].as_ref().expect("edge-3 has a target"));
        assert_eq!(edge3["__address__"], "[fd00::3]:10250");
        assert!(groups[3].is_none(), "no address, no target");
    }
}

/// A watch stream of pods: every event type, white space between documents as the API
/// server writes one event per line.
const EVENTS: &str = concat!(
    r#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","namespace":"shop","uid":"u1","resourceVersion":"101"},"spec":{"nodeName":"edge-1","containers":[{"name":"web","image":"nginx","ports":[{"name":"http","containerPort":8080,"protocol":"TCP"}]}]},"status":{"phase":"Running","podIP":"10.42.0.7","hostIP":"192.168.1.21"}}}"#,
    "\n",
    r#"{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"web-1","namespace":"shop","resourceVersion":"102"},"spec":{"containers":[]},"status":{"phase":"Succeeded"}}}"#,
    "\n",
    r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"150","annotations":{"k8s.io/initial-events-end":"true"}}}}"#,
    "\n",
    r#"{"type":"DELETED","object":{"kind":"Pod","metadata":{"name":"web-1","namespace":"shop","resourceVersion":"151"}}}"#,
    "\n",
    r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 99 (151)","reason":"Expired","code":410}}"#,
    "\n"
);

/// The events of a stream fed `chunk` bytes at a time, and whether it ended well.
fn events(body: &str, chunk: usize) -> (Vec<WatchEvent>, Result<(), PodListError>) {
    let mut reader = PodListReader::of(Doc::Events);
    let bytes = body.as_bytes();
    let mut window = Window::new(16, 1 << 20);
    let (mut fed, mut out) = (0, Vec::new());
    loop {
        let used = match reader.feed(window.data(), window.eof()) {
            Ok(used) => used,
            Err(e) => return (out, Err(e)),
        };
        window.consume(used);
        out.extend(reader.take_events());
        if reader.is_done() {
            return (out, Ok(()));
        }
        let space = window.space().expect("room");
        let n = chunk.min(space.len()).min(bytes.len() - fed);
        space[..n].copy_from_slice(&bytes[fed..fed + n]);
        fed += n;
        window.filled(n);
    }
}

#[test]
fn a_watch_stream_reads_as_its_events_in_every_chunking() {
    let whole = events(EVENTS, 1 << 20);
    assert_eq!(whole.1, Ok(()));
    let got = whole.0;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "BOOKMARK", "DELETED", "ERROR"]);
    let versions: Vec<&str> = got.iter().map(|e| e.version.as_str()).collect();
    assert_eq!(versions, ["101", "102", "150", "151", ""]);
    let added = &got[0].object;
    assert_eq!(
        (added.name.as_str(), added.namespace.as_str()),
        ("web-1", "shop")
    );
    assert_eq!(added.pod_ip, "10.42.0.7");
    assert_eq!(added.containers[0].ports[0].number, "8080");
    assert!(
        got[1].object.pod_ip.is_empty(),
        "a pod without an IP is kept in a watch"
    );
    assert_eq!(got[4].object_kind, "Status");
    assert_eq!(got[4].code, "410");
    assert_eq!(got[4].message, "too old resource version: 99 (151)");
    for chunk in [1, 2, 5, 64, 333] {
        assert_eq!(
            events(EVENTS, chunk),
            (got.clone(), Ok(())),
            "chunks of {chunk}"
        );
    }
    // No event at all, or only white space: a watch the server ended at once.
    assert_eq!(events("", 7), (Vec::new(), Ok(())));
    assert_eq!(events("\n \n", 1), (Vec::new(), Ok(())));
}

#[test]
fn a_watch_stream_cut_inside_an_event_fails_after_the_whole_ones() {
    let cut = &EVENTS[..EVENTS.find("BOOKMARK").expect("bookmark") + 20];
    for chunk in [1, 9, 1 << 20] {
        let (got, end) = events(cut, chunk);
        assert_eq!(got.len(), 2, "the two whole events are read");
        let e = end.expect_err("truncated");
        assert!(e.to_string().contains("unexpected end"), "{e}");
    }
    let (_, end) = events(r#"{"type":"ADDED"}"#, 3);
    assert_eq!(end, Err(PodListError::EventObject));
    let (_, end) = events("[1]", 3);
    assert_eq!(end, Err(PodListError::NotObject));
}

#[test]
fn a_list_of_another_kind_is_refused() {
    let mut reader = PodListReader::of(Doc::NodeList);
    let body = br#"{"kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#;
    let err = reader.feed(body, true).expect_err("not nodes");
    assert_eq!(err, PodListError::Kind("PodList".to_owned(), "NodeList"));
    assert_eq!(err.to_string(), "kind \"PodList\", not NodeList");
}

#[test]
fn the_in_cluster_config_is_client_go_s() {
    let dir = std::env::temp_dir().join(format!("promlet-incluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let missing = in_cluster(None, Some("443"), &dir).expect_err("no host");
    assert_eq!(
        missing,
        "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and \
         KUBERNETES_SERVICE_PORT must be defined"
    );
    assert!(in_cluster(Some("10.43.0.1"), Some(""), &dir).is_err());
    let no_token = in_cluster(Some("10.43.0.1"), Some("443"), &dir).expect_err("no token");
    assert!(
        no_token.ends_with("token: no such file or directory"),
        "{no_token}"
    );
    std::fs::write(dir.join("token"), "t").expect("token");
    let s = in_cluster(Some("10.43.0.1"), Some("443"), &dir).expect("in cluster");
    assert_eq!(
        (s.scheme.as_str(), s.authority.as_str(), s.base.as_str()),
        ("https", "10.43.0.1:443", "")
    );
    assert_eq!(
        s.http.auth,
        Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: Secret::File(dir.join("token").to_string_lossy().into_owned()),
        }
    );
    assert_eq!(
        s.http.tls_config.ca_file,
        dir.join("ca.crt").to_string_lossy()
    );
    let v6 = in_cluster(Some("fd00:43::1"), Some("6443"), &dir).expect("in cluster");
    assert_eq!(v6.authority, "[fd00:43::1]:6443");
    std::fs::remove_dir_all(&dir).expect("clean");
}

fn sd(role: KubeRole) -> KubernetesSdConfig {
    KubernetesSdConfig {
        role,
        api_server: Some(crate::config::url::parse("https://127.0.0.1:6443/prefix/").expect("url")),
        namespaces: Vec::new(),
        own_namespace: false,
        label_selector: String::new(),
        field_selector: String::new(),
        http: HttpClientConfig::default(),
    }
}

#[test]
fn collections_follow_role_and_namespaces() {
    let mut pods = sd(KubeRole::Pod);
    assert_eq!(collections(&pods, None), ["/api/v1/pods"]);
    pods.namespaces = vec!["shop".to_owned(), "kube-system".to_owned()];
    assert_eq!(
        collections(&pods, Some("shop")),
        [
            "/api/v1/namespaces/kube-system/pods",
            "/api/v1/namespaces/shop/pods"
        ]
    );
    let mut nodes = sd(KubeRole::Node);
    nodes.namespaces = vec!["shop".to_owned()];
    assert_eq!(collections(&nodes, Some("shop")), ["/api/v1/nodes"]);
    let server = api_server(&pods).expect("explicit");
    assert_eq!(server.base, "/prefix");
    assert_eq!(server.authority, "127.0.0.1:6443");
}

/// An informer that never connects: [`Informer::apply`] on its own.
fn informer(role: KubeRole) -> (Informer, Published, smol::channel::Receiver<()>) {
    let mut config = sd(role);
    config.field_selector = "spec.nodeName=edge-1".to_owned();
    config.label_selector = "app in (web, db)".to_owned();
    let server = api_server(&config).expect("server");
    let (tx, rx) = smol::channel::bounded(1);
    let out = Published::default();
    let i = Informer::new(&config, &server, "/api/v1/pods", Rc::clone(&out), tx);
    (i, out, rx)
}

#[test]
fn an_informer_applies_events_and_moves_its_version() {
    let (mut i, _out, _rx) = informer(KubeRole::Pod);
    assert_eq!(i.path, "/prefix/api/v1/pods");
    assert_eq!(
        i.selectors,
        "&fieldSelector=spec.nodeName%3Dedge-1&labelSelector=app+in+%28web%2C+db%29"
    );
    let (got, _) = events(EVENTS, 1 << 20);
    let mut it = got.into_iter();
    let added = it.next().expect("added");
    assert_eq!(i.apply(added.clone()).ok(), Some(true));
    assert_eq!(i.version, "101");
    assert_eq!(i.objects["shop/web-1"].len(), 1, "one port, one target");
    assert_eq!(
        i.apply(added).ok(),
        Some(false),
        "the same object again changes nothing"
    );
    // No IP any more: the pod's targets go, its key stays with none.
    assert_eq!(i.apply(it.next().expect("modified")).ok(), Some(true));
    assert!(i.objects["shop/web-1"].is_empty());
    assert_eq!(i.apply(it.next().expect("bookmark")).ok(), Some(false));
    assert_eq!(i.version, "150");
    assert_eq!(i.apply(it.next().expect("deleted")).ok(), Some(true));
    assert!(i.objects.is_empty());
    assert_eq!(i.version, "151");
    assert!(matches!(
        i.apply(it.next().expect("error")),
        Err(Ok(WatchEnd::Expired))
    ));
    let other = WatchEvent {
        kind: "ERROR".to_owned(),
        code: "500".to_owned(),
        message: "etcd is down".to_owned(),
        ..WatchEvent::default()
    };
    match i.apply(other) {
        Err(Err(e)) => assert_eq!(e.to_string(), "watch error 500: etcd is down"),
        other => panic!("{other:?}"),
    }
    let odd = WatchEvent {
        kind: "RENAMED".to_owned(),
        ..WatchEvent::default()
    };
    assert!(matches!(i.apply(odd), Err(Err(KubeError::EventType(_)))));
    assert_eq!(i.version, "151", "failures leave the version");
}

#[test]
fn an_informer_publishes_every_object_s_groups() {
    let (mut i, out, rx) = informer(KubeRole::Pod);
    let (got, _) = events(EVENTS, 1 << 20);
    i.apply(got[0].clone()).expect("added");
    i.publish();
    assert_eq!(out.borrow().len(), 1);
    assert_eq!(out.borrow()[0].targets, ["10.42.0.7:8080"]);
    assert!(rx.try_recv().is_ok(), "told");
    i.publish();
    i.publish();
    assert!(
        rx.try_recv().is_ok() && rx.try_recv().is_err(),
        "one notice is enough"
    );
}
