//! A kubelet's `/pods` body of any size, shaped like a real node's: compact JSON as the
//! kubelet writes it, each pod with the parts that make it large (`managedFields`, a
//! `kubectl.kubernetes.io/last-applied-configuration` annotation full of escaped quotes,
//! env, probes, volumes, container states), about 18 KB a pod, so 110 pods are ~2 MB.
//! Shared by the memory test (`tests/pods_memory.rs`) and the reader's unit tests.

use std::fmt::Write;

/// A `v1.PodList` of `pods` pods; pod `i` has IP `10.42.<i/200>.<i%200+1>` except every
/// 11th, which is pending (no IP); every 3rd has an init container, every 4th a port-less
/// sidecar.
pub fn pod_list(pods: usize) -> String {
    let mut out = String::with_capacity(pods * 19_000);
    out.push_str(r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#);
    for i in 0..pods {
        if i > 0 {
            out.push(',');
        }
        pod(i, &mut out);
    }
    out.push_str("]}");
    out
}

fn pod(i: usize, out: &mut String) {
    let app = ["web", "api", "worker", "cache", "db"][i % 5];
    let name = format!("{app}-7c9f6d8b5-{i:05}");
    let ns = ["default", "kube-system", "monitoring"][i % 3];
    let uid = format!("{i:08x}-6a1d-4c51-9d7e-0c3b8f6a2e11");
    let w = |out: &mut String, s: std::fmt::Arguments<'_>| {
        out.write_fmt(s).expect("writes to a String");
    };
    w(
        out,
        format_args!(
            r#"{{"metadata":{{"name":"{name}","generateName":"{app}-7c9f6d8b5-","namespace":"{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-11-30T08:12:44Z","labels":{{"app.kubernetes.io/name":"{app}","app.kubernetes.io/instance":"{app}-prod","app.kubernetes.io/part-of":"shop","pod-template-hash":"7c9f6d8b5","tier":"backend"}},"annotations":{{"prometheus.io/scrape":"true","prometheus.io/port":"8080","kubernetes.io/config.seen":"2026-11-30T08:12:44.112Z","kubernetes.io/config.source":"api","kubectl.kubernetes.io/last-applied-configuration":"{applied}"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-7c9f6d8b5","uid":"b7d1c1f2-0d7a-4f0c-8f59-7f7c9a6d3c01","controller":true,"blockOwnerDeletion":true}}],"managedFields":["#,
            rv = 1000 + i,
            applied = last_applied(app, i),
        ),
    );
    for (k, manager) in [
        "kube-controller-manager",
        "kubelet",
        "kubectl-client-side-apply",
        "kube-scheduler",
        "helm",
    ]
    .iter()
    .enumerate()
    {
        if k > 0 {
            out.push(',');
        }
        w(
            out,
            format_args!(
                r#"{{"manager":"{manager}","operation":"Update","apiVersion":"v1","time":"2026-11-30T08:12:44Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:generateName":{{}},"f:labels":{{".":{{}},"f:app.kubernetes.io/name":{{}},"f:pod-template-hash":{{}}}},"f:ownerReferences":{{".":{{}},"k:{{\"uid\":\"b7d1c1f2-0d7a-4f0c-8f59-7f7c9a6d3c01\"}}":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"{app}\"}}":{{".":{{}},"f:env":{{".":{{}},"k:{{\"name\":\"LOG_LEVEL\"}}":{{".":{{}},"f:name":{{}},"f:value":{{}}}},"k:{{\"name\":\"DB_PASSWORD\"}}":{{".":{{}},"f:name":{{}},"f:valueFrom":{{".":{{}},"f:secretKeyRef":{{}}}}}}}},"f:image":{{}},"f:imagePullPolicy":{{}},"f:livenessProbe":{{".":{{}},"f:failureThreshold":{{}},"f:httpGet":{{".":{{}},"f:path":{{}},"f:port":{{}},"f:scheme":{{}}}}}},"f:name":{{}},"f:ports":{{".":{{}},"k:{{\"containerPort\":8080,\"protocol\":\"TCP\"}}":{{".":{{}},"f:containerPort":{{}},"f:name":{{}},"f:protocol":{{}}}}}},"f:resources":{{".":{{}},"f:limits":{{".":{{}},"f:memory":{{}}}},"f:requests":{{".":{{}},"f:cpu":{{}},"f:memory":{{}}}}}}}}}},"f:dnsPolicy":{{}},"f:restartPolicy":{{}},"f:schedulerName":{{}},"f:securityContext":{{}},"f:terminationGracePeriodSeconds":{{}}}},"f:status":{{"f:conditions":{{"k:{{\"type\":\"Ready\"}}":{{".":{{}},"f:lastProbeTime":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}}}},"f:podIP":{{}},"f:podIPs":{{".":{{}},"k:{{\"ip\":\"10.42.0.1\"}}":{{".":{{}},"f:ip":{{}}}}}}}}}}}}"#
            ),
        );
    }
    out.push_str(r#"]},"spec":{"volumes":["#);
    for v in 0..4 {
        if v > 0 {
            out.push(',');
        }
        w(
            out,
            format_args!(
                r#"{{"name":"kube-api-access-{v}x9z","projected":{{"sources":[{{"serviceAccountToken":{{"expirationSeconds":3607,"path":"token"}}}},{{"configMap":{{"name":"kube-root-ca.crt","items":[{{"key":"ca.crt","path":"ca.crt"}}]}}}},{{"downwardAPI":{{"items":[{{"path":"namespace","fieldRef":{{"apiVersion":"v1","fieldPath":"metadata.namespace"}}}}]}}}}],"defaultMode":420}}}}"#
            ),
        );
    }
    out.push_str(r#"],"containers":["#);
    container(app, &format!("ghcr.io/example/{app}:2.3.{i}"), true, out);
    if i % 4 == 0 {
        out.push(',');
        container("log-shipper", "fluent/fluent-bit:2.2", false, out);
    }
    out.push(']');
    if i % 3 == 0 {
        out.push_str(r#","initContainers":["#);
        container("migrate", "ghcr.io/example/migrate:1", false, out);
        out.push(']');
    }
    w(
        out,
        format_args!(
            r#","restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","nodeName":"edge-1","securityContext":{{}},"schedulerName":"default-scheduler","tolerations":[{{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"}},"status":{{"phase":"{phase}","conditions":["#,
            phase = if i % 11 == 10 { "Pending" } else { "Running" },
        ),
    );
    for (k, kind) in ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .enumerate()
    {
        if k > 0 {
            out.push(',');
        }
        let status = if i % 7 == 3 && k > 0 { "False" } else { "True" };
        w(
            out,
            format_args!(
                r#"{{"type":"{kind}","status":"{status}","lastProbeTime":null,"lastTransitionTime":"2026-11-30T08:12:50Z"}}"#
            ),
        );
    }
    out.push(']');
    if i % 11 != 10 {
        let ip = format!("10.42.{}.{}", i / 200, i % 200 + 1);
        w(
            out,
            format_args!(r#","hostIP":"192.168.1.20","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]"#),
        );
    }
    out.push_str(r#","startTime":"2026-11-30T08:12:44Z","containerStatuses":["#);
    status(app, i, out);
    if i % 4 == 0 {
        out.push(',');
        status("log-shipper", i + 7, out);
    }
    out.push(']');
    if i % 3 == 0 {
        out.push_str(r#","initContainerStatuses":["#);
        status("migrate", i + 13, out);
        out.push(']');
    }
    out.push_str(r#","qosClass":"Burstable"}}"#);
}

fn container(name: &str, image: &str, ports: bool, out: &mut String) {
    out.write_fmt(format_args!(r#"{{"name":"{name}","image":"{image}","#))
        .expect("writes to a String");
    if ports {
        out.push_str(r#""ports":[{"name":"http","containerPort":8080,"protocol":"TCP"},{"name":"metrics","containerPort":9090,"protocol":"TCP"}],"#);
    }
    out.push_str(r#""env":["#);
    for e in 0..20 {
        if e > 0 {
            out.push(',');
        }
        out.write_fmt(format_args!(
            r#"{{"name":"SETTING_{e}","value":"value-{e} with \"quotes\" and \\ back\u00e9"}}"#
        ))
        .expect("writes to a String");
    }
    out.push_str(r#",{"name":"DB_PASSWORD","valueFrom":{"secretKeyRef":{"name":"db","key":"password"}}}],"resources":{"limits":{"memory":"256Mi"},"requests":{"cpu":"100m","memory":"128Mi"}},"volumeMounts":[{"name":"kube-api-access-0x9z","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"livenessProbe":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"initialDelaySeconds":10,"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},"readinessProbe":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent","securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"runAsNonRoot":true,"capabilities":{"drop":["ALL"]}}}"#);
}

fn status(name: &str, n: usize, out: &mut String) {
    out.write_fmt(format_args!(
        r#"{{"name":"{name}","state":{{"running":{{"startedAt":"2026-11-30T08:12:49Z"}}}},"lastState":{{}},"ready":true,"restartCount":0,"image":"ghcr.io/example/{name}:2.3.1","imageID":"ghcr.io/example/{name}@sha256:{n:064x}","containerID":"containerd://{n:064x}","started":true}}"#
    ))
    .expect("writes to a String");
}

/// `kubectl apply`'s copy of the object as a JSON string inside JSON: ~2.5 KB of `\"`.
fn last_applied(app: &str, i: usize) -> String {
    let mut inner = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"annotations":{{"prometheus.io/scrape":"true"}},"labels":{{"app.kubernetes.io/name":"{app}"}},"name":"{app}-{i}","namespace":"default"}},"spec":{{"containers":["#
    );
    for c in 0..10 {
        if c > 0 {
            inner.push(',');
        }
        inner.push_str(&format!(
            r#"{{"name":"{app}-{c}","image":"ghcr.io/example/{app}:2.3.1","ports":[{{"containerPort":8080,"name":"http"}}],"env":[{{"name":"A","value":"1"}},{{"name":"B","value":"2"}}],"resources":{{"limits":{{"memory":"256Mi"}}}}}}"#
        ));
    }
    inner.push_str("]}}\n");
    inner
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
