//! One admission review of a realistic ~4.4 KB GPU training pod (webhook/testdata), in-process:
//! - `review_pod`: bytes in, AdmissionReview bytes out (decode, decide, patch, base64, encode);
//! - `mutate_pod`: the decision alone on an already-decoded pod;
//! - `router`: the same review through the axum router (body extraction, metrics, headers).

use std::hint::black_box;

use axum::body::Body;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gpu_autoscaler_webhook::{AppState, Config, Operation, mutate_pod, review_pod, router};
use http::{Request, header};
use k8s_openapi::api::core::v1::Pod;
use tower::ServiceExt;

const FIXTURE: &str = include_str!("../testdata/review-gpu-pod.json");

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let body = FIXTURE.as_bytes();
    let review: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture parses");
    let pod: Pod =
        serde_json::from_value(review["request"]["object"].clone()).expect("fixture pod decodes");

    let mut g = c.benchmark_group("webhook");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("review_pod", |b| {
        b.iter(|| review_pod(black_box(body), &config).map(|a| a.body.len()))
    });
    g.bench_function("mutate_pod", |b| {
        b.iter(|| mutate_pod(black_box(&pod), Operation::Create, "ml-training", &config))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let app = router(AppState::new(Config::default()));
    g.bench_function("router", |b| {
        b.iter(|| {
            let req = Request::post("/mutate")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(FIXTURE))
                .expect("request");
            rt.block_on(app.clone().oneshot(req)).map(|r| r.status())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
