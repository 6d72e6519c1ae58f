//! The first way promlet read `/pods`, kept for tests only as the oracle of the streaming
//! reader: the whole body parsed into the config's YAML tree (JSON is YAML), then the
//! fields looked up in it. The lookups are those the labels were first built from; the
//! reader must give the same [`Pod`]s on every body.

use super::pods::{self, Condition, Container, ContainerStatus, Owner, Pod, Port};
use crate::config::yaml::{Kind, Node};
use crate::config::TargetGroup;

/// A mapping's value for `key`, if the node is a mapping that has it (the first, if twice).
fn get<'n>(node: Option<&'n Node>, key: &str) -> Option<&'n Node> {
    match &node?.kind {
        Kind::Map(entries) => entries.iter().find_map(|(k, v)| match &k.kind {
            Kind::Scalar { text, .. } if text == key => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// A scalar's text ("" for anything else, as Go leaves a missing string field empty).
fn text(node: Option<&Node>) -> String {
    match node.map(|n| &n.kind) {
        Some(Kind::Scalar { text, plain }) if !(*plain && text == "null") => text.clone(),
        _ => String::new(),
    }
}

/// `node.key` as text.
fn field(node: Option<&Node>, key: &str) -> String {
    text(get(node, key))
}

/// A sequence's items (none for anything else).
fn items<'n>(node: Option<&'n Node>, key: &str) -> &'n [Node] {
    match get(node, key).map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items,
        _ => &[],
    }
}

/// A mapping's entries as text (none for anything else).
fn string_map(node: Option<&Node>, key: &str) -> Vec<(String, String)> {
    match get(node, key).map(|n| &n.kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .map(|(k, v)| (text(Some(k)), text(Some(v))))
            .collect(),
        _ => Vec::new(),
    }
}

fn containers(spec: Option<&Node>, key: &str) -> Vec<Container> {
    items(spec, key)
        .iter()
        .map(|c| Container {
            name: field(Some(c), "name"),
            image: field(Some(c), "image"),
            ports: items(Some(c), "ports")
                .iter()
                .map(|p| Port {
                    name: field(Some(p), "name"),
                    number: field(Some(p), "containerPort"),
                    protocol: field(Some(p), "protocol"),
                })
                .collect(),
        })
        .collect()
}

fn statuses(status: Option<&Node>, key: &str) -> Vec<ContainerStatus> {
    items(status, key)
        .iter()
        .map(|s| ContainerStatus {
            name: field(Some(s), "name"),
            container_id: field(Some(s), "containerID"),
        })
        .collect()
}

/// The pods of a parsed `v1.PodList` that have an IP, or why it is not one.
pub(super) fn pods_of(list: &Node) -> Result<Vec<Pod>, String> {
    if !matches!(list.kind, Kind::Map(_)) {
        return Err("not a JSON object".to_owned());
    }
    let kind = field(Some(list), "kind");
    if !kind.is_empty() && kind != "PodList" {
        return Err(format!("kind {kind:?}, not PodList"));
    }
    let mut out = Vec::new();
    for pod in items(Some(list), "items") {
        let meta = get(Some(pod), "metadata");
        let spec = get(Some(pod), "spec");
        let status = get(Some(pod), "status");
        let pod_ip = field(status, "podIP");
        if pod_ip.is_empty() {
            continue;
        }
        out.push(Pod {
            name: field(meta, "name"),
            namespace: field(meta, "namespace"),
            uid: field(meta, "uid"),
            labels: string_map(meta, "labels"),
            annotations: string_map(meta, "annotations"),
            owners: items(meta, "ownerReferences")
                .iter()
                .map(|r| Owner {
                    kind: field(Some(r), "kind"),
                    name: field(Some(r), "name"),
                    controller: matches!(
                        get(Some(r), "controller").map(|c| &c.kind),
                        Some(Kind::Scalar { text, plain: true }) if text == "true"
                    ),
                })
                .collect(),
            node_name: field(spec, "nodeName"),
            containers: containers(spec, "containers"),
            init_containers: containers(spec, "initContainers"),
            phase: field(status, "phase"),
            pod_ip,
            host_ip: field(status, "hostIP"),
            conditions: items(status, "conditions")
                .iter()
                .map(|c| Condition {
                    kind: field(Some(c), "type"),
                    status: field(Some(c), "status"),
                })
                .collect(),
            statuses: statuses(status, "containerStatuses"),
            init_statuses: statuses(status, "initContainerStatuses"),
            // Node fields: pods have none.
            ..Pod::default()
        });
    }
    Ok(out)
}

/// The groups of a parsed pod list, through the tree ([`pods::groups`] of [`pods_of`]).
pub(super) fn pod_groups(list: &Node) -> Result<Vec<TargetGroup>, String> {
    pods_of(list).map(|p| pods::groups(&p))
}
