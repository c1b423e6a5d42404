//! The HTTP edge through `tower::ServiceExt::oneshot`: AdmissionReview versions, bad bodies,
//! the size limit, non-pod kinds, policy validation, probes and metrics.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use base64::Engine;
use gpu_autoscaler_webhook::{AppState, Config, MAX_BODY_BYTES, router};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const FIXTURE: &str = include_str!("../testdata/review-gpu-pod.json");

/// (case, content type, body, expected status, text the message must contain)
type BadBodyCase = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

fn app() -> (Router, Arc<AppState>) {
    let state = AppState::new(Config::default());
    (router(state.clone()), state)
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap()
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

async fn review(app: &Router, path: &str, body: &Value) -> Value {
    let (status, bytes) = call(app, post(path, Some("application/json"), body.to_string())).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

fn decode_patch(resp: &Value) -> json_patch::Patch {
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let b64 = resp["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn v1_and_v1beta1_gpu_pod_are_mutated_in_their_own_version() {
    let (app, _) = app();
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let mut req = fixture();
        req["apiVersion"] = version.into();
        let resp = review(&app, "/mutate", &req).await;
        assert_eq!(resp["apiVersion"], version);
        assert_eq!(resp["kind"], "AdmissionReview");
        assert_eq!(
            resp["response"]["uid"],
            "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
        );
        assert_eq!(resp["response"]["allowed"], true);
        let patch = decode_patch(&resp);
        let mut pod = req["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["metadata"]["annotations"]["gpu-autoscaler.io/eviction-priority"],
            "high"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["gpu-autoscaler.io/tier-preference"],
            "reserved,on-demand,spot"
        );
        assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9400");
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 4);
        assert_eq!(
            pod["spec"]["affinity"]["podAntiAffinity"],
            req["request"]["object"]["spec"]["affinity"]["podAntiAffinity"]
        );
        assert_eq!(
            pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                [0]["weight"],
            100
        );
    }
}

#[tokio::test]
async fn non_gpu_pods_other_kinds_and_subresources_pass_unchanged() {
    let (app, _) = app();
    let mut cpu = fixture();
    cpu["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1"}});
    let mut deployment = fixture();
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["object"] =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    let mut binding = fixture();
    binding["request"]["subResource"] = "binding".into();
    let mut delete = fixture();
    delete["request"]["operation"] = "DELETE".into();
    delete["request"]["oldObject"] = delete["request"]["object"].take();
    let mut update = fixture();
    update["request"]["operation"] = "UPDATE".into();
    for (name, req) in [
        ("cpu pod", cpu),
        ("deployment", deployment),
        ("binding", binding),
        ("delete", delete),
        ("update", update),
    ] {
        let resp = review(&app, "/mutate", &req).await;
        assert_eq!(resp["response"]["allowed"], true, "{name}");
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
        assert!(resp["response"].get("patchType").is_none(), "{name}");
        assert_eq!(resp["response"]["uid"], req["request"]["uid"], "{name}");
    }
}

#[tokio::test]
async fn invalid_annotation_is_denied_with_its_message() {
    let (app, _) = app();
    let mut req = fixture();
    req["request"]["object"]["metadata"]["annotations"]["gpu-autoscaler.io/eviction-priority"] =
        "urgent".into();
    let resp = review(&app, "/mutate", &req).await;
    assert_eq!(resp["response"]["allowed"], false);
    assert_eq!(resp["response"]["status"]["code"], 422);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gpu-autoscaler.io/eviction-priority") && msg.contains("low, medium, high"),
        "{msg}"
    );
}

#[tokio::test]
async fn undecodable_pod_is_admitted_with_a_warning() {
    let (app, state) = app();
    let mut req = fixture();
    req["request"]["object"]["spec"]["containers"] = "not a list".into();
    let resp = review(&app, "/mutate", &req).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
    assert!(
        resp["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("could not decode the pod")
    );
    assert!(state.metrics.encode().contains(r#"result="error""#));
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx() {
    let (app, _) = app();
    let truncated = &FIXTURE[..FIXTURE.len() / 2];
    let mut no_request = fixture();
    no_request.as_object_mut().unwrap().remove("request");
    let mut wrong_version = fixture();
    wrong_version["apiVersion"] = "admission.k8s.io/v2".into();
    let mut wrong_kind = fixture();
    wrong_kind["kind"] = "TokenReview".into();
    let mut no_uid = fixture();
    no_uid["request"]["uid"] = "".into();
    let j = Some("application/json");
    let cases: Vec<BadBodyCase> = vec![
        (
            "malformed",
            j,
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "not a valid AdmissionReview",
        ),
        (
            "truncated",
            j,
            truncated.as_bytes().to_vec(),
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            "empty",
            j,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "not a valid AdmissionReview",
        ),
        (
            "binary",
            j,
            vec![0xff, 0x00, 0x12],
            StatusCode::BAD_REQUEST,
            "not a valid",
        ),
        (
            "no request",
            j,
            no_request.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "has no request",
        ),
        (
            "wrong version",
            j,
            wrong_version.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "unsupported apiVersion",
        ),
        (
            "wrong kind",
            j,
            wrong_kind.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "unsupported kind",
        ),
        (
            "empty uid",
            j,
            no_uid.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "empty uid",
        ),
        (
            "yaml content type",
            Some("application/yaml"),
            FIXTURE.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "got application/yaml",
        ),
        (
            "no content type",
            None,
            FIXTURE.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "got none",
        ),
    ];
    for (name, ct, body, want, text) in cases {
        for path in ["/mutate", "/validate-policy"] {
            let (status, bytes) = call(&app, post(path, ct, body.clone())).await;
            let msg = String::from_utf8_lossy(&bytes);
            assert_eq!(status, want, "{name} {path}: {msg}");
            assert!(msg.contains(text), "{name} {path}: {msg:?} lacks {text:?}");
        }
    }
    // A charset parameter is fine.
    let (status, _) = call(
        &app,
        post("/mutate", Some("application/json; charset=utf-8"), FIXTURE),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn stream_errors_and_the_size_limit_are_4xx() {
    let (app, state) = app();
    // A body that breaks off mid-stream, like a client that dies.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(
            br#"{"apiVersion":"admission.k8s.io/v1","#,
        )),
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection reset",
        )),
    ];
    let (status, bytes) = call(
        &app,
        post(
            "/mutate",
            Some("application/json"),
            Body::from_stream(futures::stream::iter(chunks)),
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(String::from_utf8_lossy(&bytes).contains("could not read the request body"));

    // Over the limit, declared in Content-Length and streamed without it.
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, bytes) = call(&app, post("/mutate", Some("application/json"), big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        String::from_utf8_lossy(&bytes).contains("3 MiB"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (status, _) = call(
        &app,
        post(
            "/mutate",
            Some("application/json"),
            Body::from_stream(futures::stream::iter(chunks)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Just under the limit: a real review padded with whitespace is accepted.
    let mut padded = FIXTURE.trim_end().to_string().into_bytes();
    padded.resize(MAX_BODY_BYTES, b' ');
    let (status, _) = call(&app, post("/mutate", Some("application/json"), padded)).await;
    assert_eq!(status, StatusCode::OK);

    let metrics = state.metrics.encode();
    let errors = metrics
        .lines()
        .find(|l| {
            l.starts_with("gpu_autoscaler_webhook_requests_total")
                && l.contains(r#"result="error""#)
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(errors.ends_with(" 3"), "{errors}");
}

fn policy_review(operation: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "policy-uid-1",
            "kind": {"group": "gpu-autoscaler.io", "version": "v1alpha1", "kind": "AutoscalingPolicy"},
            "resource": {"group": "gpu-autoscaler.io", "version": "v1alpha1", "resource": "autoscalingpolicies"},
            "operation": operation,
            "object": {"apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy", "metadata": {"name": "default"}, "spec": spec},
        }
    })
}

#[tokio::test]
async fn validate_policy_allows_valid_and_denies_with_every_message() {
    let (app, _) = app();
    let resp = review(
        &app,
        "/validate-policy",
        &policy_review("CREATE", json!({})),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert_eq!(resp["response"]["uid"], "policy-uid-1");

    let bad =
        json!({"scaleUpThreshold": 0.5, "scaleDownThreshold": 0.6, "minNodes": 5, "maxNodes": 2});
    for op in ["CREATE", "UPDATE"] {
        let resp = review(&app, "/validate-policy", &policy_review(op, bad.clone())).await;
        assert_eq!(resp["response"]["allowed"], false, "{op}");
        let msg = resp["response"]["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("spec.scaleDownThreshold") && msg.contains("spec.minNodes"),
            "{msg}"
        );
    }
    let resp = review(
        &app,
        "/validate-policy",
        &policy_review("CREATE", json!({"maxNodes": "many"})),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], false);
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid AutoscalingPolicy")
    );

    let mut delete = policy_review("DELETE", bad.clone());
    delete["request"]["oldObject"] = delete["request"]["object"].take();
    let resp = review(&app, "/validate-policy", &delete).await;
    assert_eq!(resp["response"]["allowed"], true);
    // A pod sent to the policy route is not our kind: allowed.
    let resp = review(&app, "/validate-policy", &fixture()).await;
    assert_eq!(resp["response"]["allowed"], true);
    let mut v1beta1 = policy_review("CREATE", bad);
    v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let resp = review(&app, "/validate-policy", &v1beta1).await;
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(resp["response"]["allowed"], false);
}

#[tokio::test]
async fn probes_and_metrics() {
    let (app, state) = app();
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK);
    let (status, body) = call(&app, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("certificate"));
    state.set_certificate_loaded(1_900_000_000);
    assert_eq!(call(&app, get("/readyz")).await.0, StatusCode::OK);

    review(&app, "/mutate", &fixture()).await;
    let mut again = fixture();
    again["request"]["object"]["metadata"]["annotations"]["gpu-autoscaler.io/eviction-priority"] =
        "bad".into();
    review(&app, "/mutate", &again).await;
    let mut cpu = fixture();
    cpu["request"]["object"]["spec"]["containers"][0]["resources"] = json!({});
    review(&app, "/mutate", &cpu).await;

    let (status, body) = call(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for want in [
        r#"gpu_autoscaler_webhook_requests_total{route="mutate",operation="CREATE",result="mutated"} 1"#,
        r#"gpu_autoscaler_webhook_requests_total{route="mutate",operation="CREATE",result="denied"} 1"#,
        r#"gpu_autoscaler_webhook_requests_total{route="mutate",operation="CREATE",result="unchanged"} 1"#,
        r#"gpu_autoscaler_webhook_request_duration_seconds_count{route="mutate"} 3"#,
        "gpu_autoscaler_webhook_certificate_expiry_timestamp_seconds 1900000000",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}
