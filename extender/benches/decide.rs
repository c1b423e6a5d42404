//! filter + prioritize in cache mode at 100, 1,000 and 5,000 nodes.
//!
//! `decide/*`: what one scheduling decision costs inside the extender once the request is
//! decoded: index read lock, name lookups, filter and prioritize (high-priority pod, so all four
//! score components run; the owner lookup for spreading runs, with no siblings placed).
//! `handler/*`: the same through the request handlers, JSON decoding and encoding included
//! (`/filter` then `/prioritize`, one decision), without a socket.
//!
//! Run: `cargo bench -p gpu-autoscaler-extender --bench decide`

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gpu_autoscaler_api::GpuResourceNames;
use gpu_autoscaler_extender::decide::{self, ScoreContext};
use gpu_autoscaler_extender::server::Extender;
use gpu_autoscaler_extender::view::PodView;
use gpu_autoscaler_extender::{ClusterIndex, Config, synth};
use k8s_openapi::api::core::v1::Pod;

const SIZES: [usize; 3] = [100, 1_000, 5_000];

fn setup(n: usize) -> (Arc<Extender>, Vec<String>, serde_json::Value) {
    let now = Utc.with_ymd_and_hms(2025, 6, 28, 12, 0, 0).unwrap();
    let index = Arc::new(ClusterIndex::new(GpuResourceNames::default(), true));
    index.load_views(synth::cluster(n, now));
    let ext = Arc::new(Extender::new(Config::default(), index).with_clock(Arc::new(move || now)));
    let names = (0..n).map(|i| format!("gpu-node-{i:05}")).collect();
    let pod = synth::pod_json(
        "bench",
        2,
        Some("spot,on-demand"),
        Some("high"),
        Some("rs-1"),
    );
    (ext, names, pod)
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in SIZES {
        let (ext, names, pod) = setup(n);
        let pod: Pod = serde_json::from_value(pod).expect("synthetic pod");
        let pod = PodView::from_pod(&pod, &ext.config.gpu_names);
        let rates = ext.rates();
        let now = Utc.with_ymd_and_hms(2025, 6, 28, 12, 0, 0).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("filter+prioritize", n), &n, |b, _| {
            b.iter(|| {
                let st = ext.index.read();
                let views: Vec<_> = st.nodes_named(&names).into_iter().flatten().collect();
                let verdicts = decide::filter(&pod, views.iter().copied(), now, &ext.config);
                let spread = pod
                    .owner
                    .as_ref()
                    .and_then(|o| st.spread_of(o, |name| st.node(name)));
                let ctx = ScoreContext {
                    rates: &rates,
                    spread: spread.as_ref(),
                };
                let passed = views
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| *n);
                let scores = decide::prioritize(&pod, passed, now, &ctx, &ext.config);
                black_box((verdicts, scores))
            })
        });
    }
    group.finish();
}

fn bench_handler(c: &mut Criterion) {
    let mut group = c.benchmark_group("handler");
    for n in SIZES {
        let (ext, names, pod) = setup(n);
        let body = synth::cache_request(&pod, names);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("cache/filter+prioritize", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let f = ext.handle_filter(black_box(&body));
                    let p = ext.handle_prioritize(black_box(&body));
                    black_box((f.body.len(), p.body.len()))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_decide, bench_handler);
criterion_main!(benches);
