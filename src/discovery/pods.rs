//! The kubelet's `/pods` (a `v1.PodList`) read as it streams: [`PodListReader`] takes the
//! tokens of [`json`](super::json) and keeps only the fields role `pod` makes labels of,
//! in [`Pod`]s; [`groups`] turns those into target groups.
//!
//! Memory is the window the body streams through plus the pods kept, never the body or a
//! tree of it. Rejected: parsing the held body into the config's YAML tree, as promlet first
//! did (a 1–3 MB body and a tree ten times its size, every `refresh_interval`).
//!
//! What is kept mirrors a tree lookup exactly, so the labels are those of Prometheus'
//! `buildPod` on what Go's decoder makes of the body: the first of duplicate keys counts
//! (later ones are skipped), a field of the wrong type reads as empty, a scalar reads as its
//! text (a number as written, `true`, `false`; `null` as empty), and an array item that is
//! not an object is an element with every field empty.

use std::fmt;

use super::json::{JsonError, Lexer, Step, Token};
use super::set_label;
use crate::config::TargetGroup;

/// One pod: the fields [`groups`] reads, as text. A node from the API server is read into
/// the same struct (its metadata is read alike), with the node fields below the pod ones;
/// those stay empty for a pod, and the pod ones for a node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`, in document order.
    pub labels: Vec<(String, String)>,
    /// `metadata.annotations`, in document order.
    pub annotations: Vec<(String, String)>,
    /// `metadata.ownerReferences`.
    pub owners: Vec<Owner>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.containers`.
    pub containers: Vec<Container>,
    /// `spec.initContainers`.
    pub init_containers: Vec<Container>,
    /// `status.phase`.
    pub phase: String,
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// `status.containerStatuses`.
    pub statuses: Vec<ContainerStatus>,
    /// `status.initContainerStatuses`.
    pub init_statuses: Vec<ContainerStatus>,
    /// A node's `spec.providerID`.
    pub provider_id: String,
    /// A node's `status.addresses`: (`type`, `address`), in document order.
    pub addresses: Vec<(String, String)>,
    /// A node's `status.daemonEndpoints.kubeletEndpoint.Port`, as written.
    pub kubelet_port: String,
}

/// An owner reference.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `kind`.
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `controller` is the literal `true`.
    pub controller: bool,
}

/// A container of the spec.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
    /// `ports`.
    pub ports: Vec<Port>,
}

/// A declared container port.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Port {
    /// `name`.
    pub name: String,
    /// `containerPort`, as written.
    pub number: String,
    /// `protocol`.
    pub protocol: String,
}

/// A pod condition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub kind: String,
    /// `status`.
    pub status: String,
}

/// A container's status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// `name`.
    pub name: String,
    /// `containerID`.
    pub container_id: String,
}

/// Why a body is not a pod list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodListError {
    /// Not JSON.
    Json(JsonError),
    /// The body is empty (white space only).
    Empty,
    /// JSON, but not an object.
    NotObject,
    /// An object of another `kind` (a `Status` with an error, usually), and the kind asked for.
    Kind(String, &'static str),
    /// A watch event's `object` is not an object.
    EventObject,
    /// One token (a string, usually) is longer than the window may grow.
    TokenTooLong(usize),
}

impl fmt::Display for PodListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodListError::Json(e) => e.fmt(f),
            PodListError::Empty => f.write_str("empty body"),
            PodListError::NotObject => f.write_str("not a JSON object"),
            PodListError::Kind(kind, want) => write!(f, "kind {kind:?}, not {want}"),
            PodListError::EventObject => f.write_str("a watch event without an object"),
            PodListError::TokenTooLong(max) => {
                write!(f, "a JSON token longer than {max} bytes")
            }
        }
    }
}

impl std::error::Error for PodListError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PodListError::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// Where in the pod list an open container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A list's top object.
    Root,
    /// A list's `metadata`.
    ListMeta,
    /// A watch event's top object.
    Event,
    Items,
    Pod,
    Metadata,
    /// `labels` (false) or `annotations` (true).
    Map(bool),
    Owners,
    Owner,
    Spec,
    Containers,
    Container,
    Ports,
    Port,
    Status,
    Conditions,
    Condition,
    Statuses,
    ContainerStatus,
    Addresses,
    Address,
    DaemonEndpoints,
    KubeletEndpoint,
}

/// A text field of the pod under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Kind,
    /// The list's `metadata.resourceVersion`.
    ListVersion,
    /// A watch event's `type`.
    EventType,
    /// A watch event object's `kind`, `code` and `message` (a `Status` on `ERROR`).
    ObjectKind,
    StatusCode,
    StatusMessage,
    /// An object's `metadata.resourceVersion` (kept for watch events only).
    ObjectVersion,
    ProviderId,
    AddressType,
    Address,
    KubeletPort,
    Name,
    Namespace,
    Uid,
    /// The value of the last `labels` (false) or `annotations` (true) entry.
    MapValue(bool),
    OwnerKind,
    OwnerName,
    NodeName,
    ContainerName,
    Image,
    PortName,
    PortNumber,
    Protocol,
    Phase,
    PodIp,
    HostIp,
    ConditionType,
    ConditionStatus,
    StatusName,
    ContainerId,
}

/// What the next value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Nothing: skipped.
    Skip,
    /// A text field.
    Text(Text),
    /// `ownerReferences[].controller`.
    Controller,
    /// An object or array to walk into, as this place.
    Into(Place),
}

/// The keys each object place reads; a key's index is its bit in [`Frame::seen`].
fn fields(place: Place) -> &'static [(&'static str, Slot)] {
    use Place as P;
    use Slot::{Into, Text as T};
    match place {
        P::Root => &[
            ("kind", T(Text::Kind)),
            ("metadata", Into(P::ListMeta)),
            ("items", Into(P::Items)),
        ],
        P::ListMeta => &[("resourceVersion", T(Text::ListVersion))],
        P::Event => &[("type", T(Text::EventType)), ("object", Into(P::Pod))],
        P::Pod => &[
            ("metadata", Into(P::Metadata)),
            ("spec", Into(P::Spec)),
            ("status", Into(P::Status)),
            ("kind", T(Text::ObjectKind)),
            ("code", T(Text::StatusCode)),
            ("message", T(Text::StatusMessage)),
        ],
        P::Metadata => &[
            ("name", T(Text::Name)),
            ("namespace", T(Text::Namespace)),
            ("uid", T(Text::Uid)),
            ("labels", Into(P::Map(false))),
            ("annotations", Into(P::Map(true))),
            ("ownerReferences", Into(P::Owners)),
            ("resourceVersion", T(Text::ObjectVersion)),
        ],
        P::Owner => &[
            ("kind", T(Text::OwnerKind)),
            ("name", T(Text::OwnerName)),
            ("controller", Slot::Controller),
        ],
        P::Spec => &[
            ("nodeName", T(Text::NodeName)),
            ("containers", Into(P::Containers)),
            ("initContainers", Into(P::Containers)),
            ("providerID", T(Text::ProviderId)),
        ],
        P::Container => &[
            ("name", T(Text::ContainerName)),
            ("image", T(Text::Image)),
            ("ports", Into(P::Ports)),
        ],
        P::Port => &[
            ("name", T(Text::PortName)),
            ("containerPort", T(Text::PortNumber)),
            ("protocol", T(Text::Protocol)),
        ],
        P::Status => &[
            ("phase", T(Text::Phase)),
            ("podIP", T(Text::PodIp)),
            ("hostIP", T(Text::HostIp)),
            ("conditions", Into(P::Conditions)),
            ("containerStatuses", Into(P::Statuses)),
            ("initContainerStatuses", Into(P::Statuses)),
            ("addresses", Into(P::Addresses)),
            ("daemonEndpoints", Into(P::DaemonEndpoints)),
        ],
        P::Condition => &[
            ("type", T(Text::ConditionType)),
            ("status", T(Text::ConditionStatus)),
        ],
        P::ContainerStatus => &[
            ("name", T(Text::StatusName)),
            ("containerID", T(Text::ContainerId)),
        ],
        P::Address => &[
            ("type", T(Text::AddressType)),
            ("address", T(Text::Address)),
        ],
        P::DaemonEndpoints => &[("kubeletEndpoint", Into(P::KubeletEndpoint))],
        P::KubeletEndpoint => &[("Port", T(Text::KubeletPort))],
        P::Items
        | P::Map(_)
        | P::Owners
        | P::Containers
        | P::Ports
        | P::Conditions
        | P::Statuses
        | P::Addresses => &[],
    }
}

/// The element place of an array place.
fn element(array: Place) -> Option<Place> {
    Some(match array {
        Place::Items => Place::Pod,
        Place::Owners => Place::Owner,
        Place::Containers => Place::Container,
        Place::Ports => Place::Port,
        Place::Conditions => Place::Condition,
        Place::Statuses => Place::ContainerStatus,
        Place::Addresses => Place::Address,
        _ => return None,
    })
}

/// One open object or array the reader walks (skipped ones are only counted).
#[derive(Debug, Clone, Copy)]
struct Frame {
    place: Place,
    /// Bit `i`: key `i` of [`fields`] was read already; a repeat is skipped, as a lookup
    /// finds the first.
    seen: u16,
}

/// What a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Doc {
    /// The kubelet's `/pods`, or a pod list from the API server: a `PodList`, keeping only
    /// the pods that have an IP (a pod without one makes no target).
    #[default]
    PodList,
    /// A `NodeList` from the API server.
    NodeList,
    /// A watch stream: `{"type": …, "object": …}` documents one after the other, each
    /// object a pod or a node (or a `Status`, on `ERROR`), read as [`WatchEvent`]s.
    Events,
}

/// One event of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchEvent {
    /// `type`: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: String,
    /// The object (its node fields, for a node).
    pub object: Pod,
    /// The object's `kind` (`Status` on `ERROR`).
    pub object_kind: String,
    /// The object's `metadata.resourceVersion`.
    pub version: String,
    /// A `Status` object's `code` (`410` when the version is too old), as written.
    pub code: String,
    /// A `Status` object's `message`.
    pub message: String,
}

/// Reads a `v1.PodList` (or a `NodeList`, or a watch stream: [`Doc`]) from its tokens as
/// they stream. Nothing but the objects and a few small buffers is allocated; skipped values
/// (most of a pod: `managedFields`, env, volumes, probes) are scanned and dropped.
#[derive(Debug, Default)]
pub struct PodListReader {
    doc: Doc,
    lexer: Lexer,
    /// The walked containers, innermost last: at most 8 (root → items → pod → spec →
    /// containers → container → ports → port), whatever the body's depth.
    frames: Vec<Frame>,
    /// Open containers inside a skipped value.
    skipping: usize,
    /// What the next value is for, once a key in a walked object said it.
    next: Option<Slot>,
    /// The walked containers are init ones: set by the keys `initContainers` and
    /// `initContainerStatuses`, cleared by `containers` and `containerStatuses`. Those lists
    /// are siblings, never nested, so the flag holds for the whole subtree of each.
    init: bool,
    kind: String,
    /// The list's `metadata.resourceVersion`.
    list_version: String,
    /// The watch event being read (its object is the last of `pods`).
    event: WatchEvent,
    /// The events read, whole.
    events: Vec<WatchEvent>,
    /// The pods read; the last is the one being read while inside `items`.
    pods: Vec<Pod>,
    /// Unescaped keys.
    scratch: String,
    done: bool,
}

impl PodListReader {
    /// At the start of a `/pods` body.
    pub fn new() -> PodListReader {
        PodListReader::default()
    }

    /// At the start of a body of `doc`.
    pub fn of(doc: Doc) -> PodListReader {
        PodListReader {
            doc,
            ..PodListReader::default()
        }
    }

    /// A list's `metadata.resourceVersion`, once read.
    pub fn list_version(&self) -> &str {
        &self.list_version
    }

    /// The watch events read whole since the last call.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, WatchEvent> {
        self.events.drain(..)
    }

    /// Reads every whole token at the front of `data`; returns how many bytes it used (the
    /// rest is the start of a token: call again with it and more). `eof`: nothing follows.
    pub fn feed(&mut self, data: &[u8], eof: bool) -> Result<usize, PodListError> {
        let mut used = 0;
        while !self.done {
            match self.lexer.next(&data[used..], eof) {
                // A stream of events may end between two, or hold none.
                Err(e) if e.reason == super::json::Reason::NoValue && self.doc == Doc::Events => {
                    self.done = true;
                }
                Err(e) if e.reason == super::json::Reason::NoValue => {
                    return Err(PodListError::Empty)
                }
                Err(e) => return Err(PodListError::Json(e)),
                Ok(Step::NeedMore(n)) => return Ok(used + n),
                Ok(Step::End) => self.done = true,
                Ok(Step::Token(t, n)) => {
                    self.token(t)?;
                    used += n;
                }
            }
        }
        Ok(used)
    }

    /// The document has ended (a [`PodListReader::feed`] with `eof` returned).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The pods of a document that ended.
    pub fn into_pods(mut self) -> Vec<Pod> {
        // An item of `items` that is not an object is a pod without an IP, like one whose
        // object has none (those are dropped as they end).
        if self.doc == Doc::PodList {
            self.pods.retain(|p| !p.pod_ip.is_empty());
        }
        self.pods
    }

    fn token(&mut self, t: Token<'_>) -> Result<(), PodListError> {
        if self.skipping > 0 {
            match t {
                Token::BeginObject | Token::BeginArray => self.skipping += 1,
                Token::EndObject | Token::EndArray => self.skipping -= 1,
                _ => {}
            }
            return Ok(());
        }
        let Some(&frame) = self.frames.last() else {
            // The document's value.
            if t != Token::BeginObject {
                return Err(PodListError::NotObject);
            }
            let place = if self.doc == Doc::Events {
                Place::Event
            } else {
                Place::Root
            };
            self.frames.push(Frame { place, seen: 0 });
            return Ok(());
        };
        if let Token::Key(k) = t {
            let key = k.text(&mut self.scratch);
            self.next = Some(match frame.place {
                Place::Map(annotations) => {
                    let (pod, kv) = (self.pods.last_mut(), (key.to_owned(), String::new()));
                    match pod {
                        Some(p) if annotations => p.annotations.push(kv),
                        Some(p) => p.labels.push(kv),
                        None => {}
                    }
                    Slot::Text(Text::MapValue(annotations))
                }
                place => {
                    let known = fields(place).iter().position(|(name, _)| *name == key);
                    match known {
                        Some(i) if frame.seen & (1 << i) == 0 => {
                            if let Some(f) = self.frames.last_mut() {
                                f.seen |= 1 << i;
                            }
                            if key.starts_with("init") {
                                self.init = true;
                            } else if matches!(key, "containers" | "containerStatuses") {
                                self.init = false;
                            }
                            fields(place)[i].1
                        }
                        _ => Slot::Skip,
                    }
                }
            });
            return Ok(());
        }
        if matches!(t, Token::EndObject | Token::EndArray) {
            self.frames.pop();
            match frame.place {
                Place::Pod
                    if self.doc == Doc::PodList
                        && self.pods.last().is_some_and(|p| p.pod_ip.is_empty()) =>
                {
                    self.pods.pop();
                }
                Place::Event => self.end_event()?,
                _ => {}
            }
            return Ok(());
        }
        // A value: an array's item, or the value of the key before it.
        let slot = match element(frame.place) {
            Some(place) => {
                self.push_element(place);
                Slot::Into(place)
            }
            None => self.next.take().unwrap_or(Slot::Skip),
        };
        self.value(slot, t)
    }

    /// A value for `slot`: walked into, kept as text, or skipped.
    fn value(&mut self, slot: Slot, t: Token<'_>) -> Result<(), PodListError> {
        let open = matches!(t, Token::BeginObject | Token::BeginArray);
        match slot {
            Slot::Into(place) => {
                let wants_array = element(place).is_some();
                let fits = if wants_array {
                    t == Token::BeginArray
                } else {
                    t == Token::BeginObject
                };
                if fits {
                    if place == Place::Pod && self.doc == Doc::Events {
                        self.pods.push(Pod::default());
                    }
                    self.frames.push(Frame { place, seen: 0 });
                } else if open {
                    self.skipping = 1;
                }
            }
            Slot::Controller => {
                if let Some(o) = self.pods.last_mut().and_then(|p| p.owners.last_mut()) {
                    o.controller = t == Token::Bool(true);
                }
                if open {
                    self.skipping = 1;
                }
            }
            Slot::Text(field) => {
                if open {
                    self.skipping = 1;
                }
                let Some(out) = self.text_mut(field) else {
                    return Ok(());
                };
                match t {
                    Token::String(s) => {
                        // The raw length bounds the value's: one allocation, near its size
                        // (the kept pods are the reader's memory).
                        out.reserve_exact(s.raw().len());
                        s.unescape_into(out);
                    }
                    Token::Number(n) => out.push_str(n),
                    Token::Bool(b) => out.push_str(if b { "true" } else { "false" }),
                    _ => {}
                }
                let want = match self.doc {
                    Doc::PodList => "PodList",
                    Doc::NodeList => "NodeList",
                    Doc::Events => "",
                };
                if field == Text::Kind && !self.kind.is_empty() && self.kind != want {
                    return Err(PodListError::Kind(std::mem::take(&mut self.kind), want));
                }
            }
            Slot::Skip => {
                if open {
                    self.skipping = 1;
                }
            }
        }
        Ok(())
    }

    /// Starts an array item: a new element, empty until its fields are read (an item that
    /// is not an object stays empty, as a lookup in it finds nothing).
    fn push_element(&mut self, place: Place) {
        if place == Place::Pod {
            self.pods.push(Pod::default());
            return;
        }
        let init = self.init;
        let Some(pod) = self.pods.last_mut() else {
            return;
        };
        let containers = if init {
            &mut pod.init_containers
        } else {
            &mut pod.containers
        };
        match place {
            Place::Owner => pod.owners.push(Owner::default()),
            Place::Container => containers.push(Container::default()),
            Place::Port => {
                if let Some(c) = containers.last_mut() {
                    c.ports.push(Port::default());
                }
            }
            Place::Condition => pod.conditions.push(Condition::default()),
            Place::Address => pod.addresses.push((String::new(), String::new())),
            Place::ContainerStatus if init => pod.init_statuses.push(ContainerStatus::default()),
            Place::ContainerStatus => pod.statuses.push(ContainerStatus::default()),
            _ => {}
        }
    }

    /// The text a field's value goes to, in the element being read.
    fn text_mut(&mut self, field: Text) -> Option<&mut String> {
        let events = self.doc == Doc::Events;
        match field {
            Text::Kind => return Some(&mut self.kind),
            Text::ListVersion => return Some(&mut self.list_version),
            Text::EventType => return Some(&mut self.event.kind),
            Text::ObjectKind if events => return Some(&mut self.event.object_kind),
            Text::StatusCode if events => return Some(&mut self.event.code),
            Text::StatusMessage if events => return Some(&mut self.event.message),
            Text::ObjectVersion if events => return Some(&mut self.event.version),
            Text::ObjectKind | Text::StatusCode | Text::StatusMessage | Text::ObjectVersion => {
                return None
            }
            _ => {}
        }
        let init = self.init;
        let pod = self.pods.last_mut()?;
        Some(match field {
            Text::Kind
            | Text::ListVersion
            | Text::EventType
            | Text::ObjectKind
            | Text::StatusCode
            | Text::StatusMessage
            | Text::ObjectVersion => return None,
            Text::ProviderId => &mut pod.provider_id,
            Text::AddressType => &mut pod.addresses.last_mut()?.0,
            Text::Address => &mut pod.addresses.last_mut()?.1,
            Text::KubeletPort => &mut pod.kubelet_port,
            Text::Name => &mut pod.name,
            Text::Namespace => &mut pod.namespace,
            Text::Uid => &mut pod.uid,
            Text::MapValue(false) => &mut pod.labels.last_mut()?.1,
            Text::MapValue(true) => &mut pod.annotations.last_mut()?.1,
            Text::OwnerKind => &mut pod.owners.last_mut()?.kind,
            Text::OwnerName => &mut pod.owners.last_mut()?.name,
            Text::NodeName => &mut pod.node_name,
            Text::ContainerName => &mut container_of(pod, init)?.name,
            Text::Image => &mut container_of(pod, init)?.image,
            Text::PortName => &mut container_of(pod, init)?.ports.last_mut()?.name,
            Text::PortNumber => &mut container_of(pod, init)?.ports.last_mut()?.number,
            Text::Protocol => &mut container_of(pod, init)?.ports.last_mut()?.protocol,
            Text::Phase => &mut pod.phase,
            Text::PodIp => &mut pod.pod_ip,
            Text::HostIp => &mut pod.host_ip,
            Text::ConditionType => &mut pod.conditions.last_mut()?.kind,
            Text::ConditionStatus => &mut pod.conditions.last_mut()?.status,
            Text::StatusName => &mut status_of(pod, init)?.name,
            Text::ContainerId => &mut status_of(pod, init)?.container_id,
        })
    }
}

impl PodListReader {
    /// A watch event's document ended: it is queued for [`PodListReader::take_events`], and
    /// the lexer starts on the next document.
    fn end_event(&mut self) -> Result<(), PodListError> {
        let mut event = std::mem::take(&mut self.event);
        match self.pods.pop() {
            Some(object) => event.object = object,
            // A `BOOKMARK` or an `ERROR` always has an object: one without is not a watch.
            None => return Err(PodListError::EventObject),
        }
        self.pods.clear();
        self.events.push(event);
        self.lexer.next_document();
        Ok(())
    }
}

/// The container being read: the last of `containers`, or of `initContainers`.
fn container_of(pod: &mut Pod, init: bool) -> Option<&mut Container> {
    if init {
        pod.init_containers.last_mut()
    } else {
        pod.containers.last_mut()
    }
}

/// The container status being read.
fn status_of(pod: &mut Pod, init: bool) -> Option<&mut ContainerStatus> {
    if init {
        pod.init_statuses.last_mut()
    } else {
        pod.statuses.last_mut()
    }
}

/// The pods of a whole body (tests, and bodies already in memory).
pub fn read(body: &[u8]) -> Result<Vec<Pod>, PodListError> {
    let mut reader = PodListReader::new();
    reader.feed(body, true)?;
    Ok(reader.into_pods())
}

/// The target groups of `pods`, one per target, as Prometheus 2.42's role `pod` builds them
/// (pod.go `buildPod`): a pod without an IP has none; every container, then every init
/// container, gives one target per declared port (`podIP:port`) or, without ports, one at
/// the pod IP. The pod's labels (`__meta_kubernetes_pod_*`, `..._namespace`) and the
/// container's labels are merged into each group's labels, sorted; `__address__` is the
/// group's one target. Empty values are kept, as Prometheus keeps them until relabeling.
pub fn groups(pods: &[Pod]) -> Vec<TargetGroup> {
    let mut out = Vec::new();
    for pod in pods {
        let pod_ip = pod.pod_ip.as_str();
        if pod_ip.is_empty() {
            continue;
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut put = |name: &str, value: &str| {
            labels.push((format!("{META}{name}"), value.to_owned()));
        };
        put("namespace", &pod.namespace);
        put("pod_name", &pod.name);
        put("pod_ip", pod_ip);
        let ready = pod
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map_or("unknown".to_owned(), |c| c.status.to_ascii_lowercase());
        put("pod_ready", &ready);
        put("pod_phase", &pod.phase);
        put("pod_node_name", &pod.node_name);
        put("pod_host_ip", &pod.host_ip);
        put("pod_uid", &pod.uid);
        // GetControllerOf: the first owner reference with `controller: true`.
        if let Some(c) = pod.owners.iter().find(|r| r.controller) {
            for (name, v) in [
                ("pod_controller_kind", &c.kind),
                ("pod_controller_name", &c.name),
            ] {
                if !v.is_empty() {
                    put(name, v);
                }
            }
        }
        object_meta("pod", pod, &mut labels);
        settle(&mut labels);
        let all = pod
            .containers
            .iter()
            .map(|c| (c, false, &pod.statuses))
            .chain(
                pod.init_containers
                    .iter()
                    .map(|c| (c, true, &pod.init_statuses)),
            );
        for (c, init, statuses) in all {
            let cname = c.name.as_str();
            let id = statuses
                .iter()
                .find(|s| s.name == cname)
                .map_or("", |s| s.container_id.as_str());
            let container = [
                ("pod_container_name", cname),
                ("pod_container_id", id),
                ("pod_container_image", c.image.as_str()),
                ("pod_container_init", if init { "true" } else { "false" }),
            ];
            if c.ports.is_empty() {
                let address = if pod_ip.contains(':') {
                    format!("[{pod_ip}]")
                } else {
                    pod_ip.to_owned()
                };
                out.push(group(&labels, address, &container));
                continue;
            }
            for port in &c.ports {
                let number = port.number.as_str();
                let address = join_host_port(pod_ip, number);
                let mut with_port = container.to_vec();
                with_port.extend([
                    ("pod_container_port_number", number),
                    ("pod_container_port_name", port.name.as_str()),
                    ("pod_container_port_protocol", port.protocol.as_str()),
                ]);
                out.push(group(&labels, address, &with_port));
            }
        }
    }
    out
}

/// An object's labels and annotations as `__meta_kubernetes_<role>_label_<name>` and
/// `_labelpresent_<name>`, `_annotation_<name>` and `_annotationpresent_<name>` (the names
/// sanitised), appended to `out`; [`settle`] sorts them in.
pub(super) fn object_meta(role: &str, object: &Pod, out: &mut Vec<(String, String)>) {
    let mut name = String::new();
    for (kind, map) in [
        ("label", &object.labels),
        ("annotation", &object.annotations),
    ] {
        for (k, v) in map {
            name.clear();
            sanitize(k, &mut name);
            out.push((format!("{META}{role}_{kind}_{name}"), v.clone()));
            out.push((
                format!("{META}{role}_{kind}present_{name}"),
                "true".to_owned(),
            ));
        }
    }
}

/// Sorts a label set by name, keeping the last written of names that came out alike (two
/// keys that sanitise alike: Go's map keeps one of them, which is unspecified).
pub(super) fn settle(labels: &mut Vec<(String, String)>) {
    labels.reverse();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|b, a| a.0 == b.0);
}

/// Go's `net.JoinHostPort`: an IPv6 host in brackets.
pub(super) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Prometheus' `strutil.SanitizeLabelName`: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub(super) fn sanitize(name: &str, out: &mut String) {
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

pub(super) const META: &str = "__meta_kubernetes_";

fn group(pod: &[(String, String)], address: String, extra: &[(&str, &str)]) -> TargetGroup {
    let mut labels = pod.to_vec();
    for (name, value) in extra {
        set_label(&mut labels, &format!("{META}{name}"), value);
    }
    TargetGroup {
        targets: vec![address],
        labels,
    }
}

#[cfg(test)]
mod tests;
