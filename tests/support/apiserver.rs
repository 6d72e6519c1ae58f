//! A Kubernetes API-server fixture on 127.0.0.1 over TLS: pods and nodes that a test
//! changes, served as the API server serves them to an informer.
//!
//! - `GET /api/v1/{pods,nodes}` lists the objects (a `fieldSelector` of `spec.nodeName=…` is
//!   applied to pods), with the list's `resourceVersion`.
//! - `…?watch=true&resourceVersion=N` streams, chunked, every change after N (one JSON event
//!   per line), then waits for more. A version older than the last [`ApiServer::compact`]
//!   gets the API server's answer: one `ERROR` event with a 410 `Status`, and the end of the
//!   stream.
//! - [`ApiServer::drop_watches`] cuts every open watch (the connection closes mid-stream, no
//!   last chunk); [`ApiServer::end_watches`] ends them as the server does at
//!   `timeoutSeconds`.
//!
//! Every request must carry the bearer token; each is recorded.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::receiver::{read_request, respond, Stream};

/// One change, as a watch sends it.
struct Change {
    version: u64,
    collection: &'static str,
    node: String,
    event: String,
}

#[derive(Default)]
struct State {
    version: u64,
    /// (collection, namespace/name) → (node, object JSON without its version).
    objects: BTreeMap<(&'static str, String), (String, String)>,
    changes: Vec<Change>,
    /// Watches from a version before this get 410.
    oldest: u64,
    drops: u64,
    ends: u64,
    requests: Vec<String>,
    unauthorized: usize,
}

/// The fixture; its threads live as long as the test process.
#[derive(Clone)]
pub struct ApiServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
}

/// A pod a test puts: enough of a real one (owner, conditions, statuses, managed fields).
pub struct PodSpec<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.name`.
    pub name: &'a str,
    /// `spec.nodeName`.
    pub node: &'a str,
    /// `status.podIP`.
    pub ip: &'a str,
    /// The one container's one port.
    pub port: u16,
    /// The `prometheus.io/scrape` annotation.
    pub scrape: bool,
}

fn object_json(s: &PodSpec<'_>, version: u64) -> String {
    let (ns, name, node, ip, port, scrape) = (s.namespace, s.name, s.node, s.ip, s.port, s.scrape);
    format!(
        concat!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","generateName":"{name}-","namespace":"{ns}","#,
            r#""uid":"uid-{name}","resourceVersion":"{version}","creationTimestamp":"2026-12-01T08:00:00Z","#,
            r#""labels":{{"app.kubernetes.io/name":"{name}","pod-template-hash":"6d4b9"}},"#,
            r#""annotations":{{"prometheus.io/scrape":"{scrape}","prometheus.io/port":"{port}"}},"#,
            r#""ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{name}-6d4b9","uid":"rs-{name}","controller":true,"blockOwnerDeletion":true}}],"#,
            r#""managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app.kubernetes.io/name":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"app\"}}":{{"f:ports":{{}}}}}}}}}}}}]}},"#,
            r#""spec":{{"nodeName":"{node}","serviceAccountName":"default","containers":[{{"name":"app","image":"registry.example/{name}:1.0","#,
            r#""ports":[{{"name":"metrics","containerPort":{port},"protocol":"TCP"}}],"env":[{{"name":"X","value":"y"}}],"resources":{{}}}}]}},"#,
            r#""status":{{"phase":"Running","hostIP":"192.168.1.21","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"#,
            r#""conditions":[{{"type":"Initialized","status":"True"}},{{"type":"Ready","status":"True"}}],"#,
            r#""containerStatuses":[{{"name":"app","ready":true,"restartCount":0,"image":"registry.example/{name}:1.0","containerID":"containerd://c-{name}"}}]}}}}"#
        ),
        name = name,
        ns = ns,
        node = node,
        ip = ip,
        port = port,
        scrape = scrape,
        version = version
    )
}

fn node_json(name: &str, ip: &str, version: u64) -> String {
    format!(
        concat!(
            r#"{{"kind":"Node","apiVersion":"v1","metadata":{{"name":"{name}","uid":"node-{name}","resourceVersion":"{version}","#,
            r#""labels":{{"kubernetes.io/arch":"arm64","kubernetes.io/hostname":"{name}"}},"#,
            r#""annotations":{{"k3s.io/internal-ip":"{ip}"}}}},"#,
            r#""spec":{{"podCIDR":"10.42.0.0/24","providerID":"k3s://{name}"}},"#,
            r#""status":{{"capacity":{{"cpu":"4","memory":"3884Mi"}},"conditions":[{{"type":"Ready","status":"True"}}],"#,
            r#""addresses":[{{"type":"InternalIP","address":"{ip}"}},{{"type":"Hostname","address":"{name}"}}],"#,
            r#""daemonEndpoints":{{"kubeletEndpoint":{{"Port":10250}}}},"nodeInfo":{{"architecture":"arm64","kubeletVersion":"v1.29.4+k3s1"}}}}}}"#
        ),
        name = name,
        ip = ip,
        version = version
    )
}

/// `%XX` and `+` decoded.
fn unescape(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request's collection and query parameters.
fn parse_target(line: &str) -> Option<(&'static str, BTreeMap<String, String>)> {
    let target = line.strip_prefix("GET ")?.split(' ').next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let collection = match path {
        "/api/v1/pods" => "pods",
        "/api/v1/nodes" => "nodes",
        _ => return None,
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    Some((collection, params))
}

/// Whether an object on `node` passes the field selector.
fn selected(params: &BTreeMap<String, String>, collection: &str, node: &str) -> bool {
    match params.get("fieldSelector") {
        Some(sel) if collection == "pods" => match sel.strip_prefix("spec.nodeName=") {
            Some(want) => want == node,
            None => panic!("the fixture knows only spec.nodeName selectors: {sel}"),
        },
        _ => true,
    }
}

fn chunk(stream: &mut dyn Stream, data: &str) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

impl ApiServer {
    /// Serves with `tls`, wanting `Authorization: Bearer <token>`.
    pub fn start(tls: Arc<rustls::ServerConfig>, token: &str) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = ApiServer {
            port: listener.local_addr().expect("addr").port(),
            state: Arc::default(),
        };
        let bearer = format!("Bearer {token}");
        let me = server.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&tls)) else {
                    continue;
                };
                let me = me.clone();
                let bearer = bearer.clone();
                std::thread::spawn(move || {
                    let stream: Box<dyn Stream> = Box::new(rustls::StreamOwned::new(conn, tcp));
                    me.connection(stream, &bearer);
                });
            }
        });
        server
    }

    fn connection(&self, stream: Box<dyn Stream>, bearer: &str) {
        let mut reader = BufReader::new(stream);
        while let Some(req) = read_request(&mut reader) {
            let stream = reader.get_mut();
            let (lock, _) = &*self.state;
            {
                let mut st = lock.lock().expect("lock");
                st.requests.push(req.line.clone());
                if req.header("authorization") != Some(bearer) {
                    st.unauthorized += 1;
                    drop(st);
                    let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
                    if respond(stream, "401 Unauthorized", &[], body, false).is_err() {
                        return;
                    }
                    continue;
                }
            }
            let Some((collection, params)) = parse_target(&req.line) else {
                if respond(stream, "404 Not Found", &[], b"", false).is_err() {
                    return;
                }
                continue;
            };
            let ok = if params.get("watch").map(String::as_str) == Some("true") {
                self.watch(stream, collection, &params)
            } else {
                self.list(stream, collection, &params)
            };
            if !ok {
                return;
            }
        }
    }

    fn list(
        &self,
        stream: &mut dyn Stream,
        collection: &'static str,
        params: &BTreeMap<String, String>,
    ) -> bool {
        let (lock, _) = &*self.state;
        let st = lock.lock().expect("lock");
        let items: Vec<&str> = st
            .objects
            .iter()
            .filter(|((c, _), (node, _))| *c == collection && selected(params, collection, node))
            .map(|(_, (_, json))| json.as_str())
            .collect();
        let kind = if collection == "pods" {
            "PodList"
        } else {
            "NodeList"
        };
        let body = format!(
            r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"resourceVersion":"{}"}},"items":[{}]}}"#,
            st.version,
            items.join(",")
        );
        drop(st);
        let headers = [("Content-Type".to_owned(), "application/json".to_owned())];
        respond(stream, "200 OK", &headers, body.as_bytes(), false).is_ok()
    }

    /// Streams a watch; false when the connection is to be dropped.
    fn watch(
        &self,
        stream: &mut dyn Stream,
        collection: &'static str,
        params: &BTreeMap<String, String>,
    ) -> bool {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .expect("a watch names its resourceVersion");
        let timeout = params
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_secs);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return false;
        }
        let (lock, wake) = &*self.state;
        let mut st = lock.lock().expect("lock");
        if from < st.oldest {
            let gone = format!(
                "{{\"type\":\"ERROR\",\"object\":{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"too old resource version: {from} ({})\",\"reason\":\"Expired\",\"code\":410}}}}\n",
                st.oldest
            );
            drop(st);
            return chunk(stream, &gone).is_ok() && stream.write_all(b"0\r\n\r\n").is_ok();
        }
        let (drops, ends) = (st.drops, st.ends);
        let deadline = Instant::now() + timeout;
        let mut sent = from;
        loop {
            // A cut is seen before what changed after it.
            if st.drops != drops {
                return false;
            }
            let out: Vec<String> = st
                .changes
                .iter()
                .filter(|c| {
                    c.version > sent
                        && c.collection == collection
                        && selected(params, collection, &c.node)
                })
                .map(|c| c.event.clone())
                .collect();
            sent = st.version;
            if !out.is_empty() {
                drop(st);
                for e in out {
                    if chunk(stream, &e).is_err() {
                        return false;
                    }
                }
                st = lock.lock().expect("lock");
                continue;
            }
            if st.ends != ends || Instant::now() >= deadline {
                drop(st);
                return stream
                    .write_all(b"0\r\n\r\n")
                    .and_then(|()| stream.flush())
                    .is_ok();
            }
            st = wake
                .wait_timeout(st, Duration::from_millis(100))
                .expect("wait")
                .0;
        }
    }

    fn change(
        &self,
        collection: &'static str,
        key: String,
        node: &str,
        kind: &str,
        json: impl FnOnce(u64) -> String,
    ) {
        let (lock, wake) = &*self.state;
        let mut st = lock.lock().expect("lock");
        st.version += 1;
        let version = st.version;
        let object = json(version);
        let event = format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n");
        if kind == "DELETED" {
            st.objects.remove(&(collection, key));
        } else {
            st.objects
                .insert((collection, key), (node.to_owned(), object));
        }
        st.changes.push(Change {
            version,
            collection,
            node: node.to_owned(),
            event,
        });
        wake.notify_all();
    }

    /// Adds or changes a pod.
    pub fn put_pod(&self, pod: &PodSpec<'_>) {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let (lock, _) = &*self.state;
        let known = lock
            .lock()
            .expect("lock")
            .objects
            .contains_key(&("pods", key.clone()));
        let kind = if known { "MODIFIED" } else { "ADDED" };
        self.change("pods", key, pod.node, kind, |v| object_json(pod, v));
    }

    /// Deletes a pod (the event carries its last state).
    pub fn delete_pod(&self, pod: &PodSpec<'_>) {
        let key = format!("{}/{}", pod.namespace, pod.name);
        self.change("pods", key, pod.node, "DELETED", |v| object_json(pod, v));
    }

    /// Adds a node.
    pub fn put_node(&self, name: &str, ip: &str) {
        self.change("nodes", name.to_owned(), "", "ADDED", |v| {
            node_json(name, ip, v)
        });
    }

    /// Forgets the history, as etcd's compaction does while other writes go on: the version
    /// moves on, and a watch from any version before it gets 410 Gone.
    pub fn compact(&self) {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().expect("lock");
        st.version += 1;
        st.oldest = st.version;
    }

    /// Cuts every open watch mid-stream.
    pub fn drop_watches(&self) {
        let (lock, wake) = &*self.state;
        lock.lock().expect("lock").drops += 1;
        wake.notify_all();
    }

    /// Ends every open watch cleanly, as at its `timeoutSeconds`.
    pub fn end_watches(&self) {
        let (lock, wake) = &*self.state;
        lock.lock().expect("lock").ends += 1;
        wake.notify_all();
    }

    /// The request lines so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().expect("lock").requests.clone()
    }

    /// Requests that lacked the token.
    pub fn unauthorized(&self) -> usize {
        self.state.0.lock().expect("lock").unauthorized
    }
}
