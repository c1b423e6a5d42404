//! gpu-autoscaler's kube-scheduler extender.
//!
//! kube-scheduler calls `POST /filter` and `POST /prioritize` for every pod that requests a
//! managed GPU resource (`k8s.io/kube-scheduler/extender/v1`). The extender:
//! - keeps a pod off nodes whose capacity type its `tier-preference` annotation does not list,
//!   off spot nodes that are about to be reclaimed, and off cordoned nodes ([`decide::filter`]);
//! - ranks the remaining nodes by a documented blend of tier position, GPU bin packing, spot
//!   risk and replica spreading ([`decide::prioritize`], [`decide::Weights`]).
//!
//! Layers, from pure to impure:
//! - [`view`]: compact [`NodeView`]/[`PodView`] built from API objects or request JSON;
//! - [`decide`]: the pure decision core (no I/O, `now` passed in);
//! - [`rates`]: spot interruption rates (published JSON + bundled AWS Spot Advisor fallback),
//!   kept current by [`sources`] (file or ConfigMap);
//! - [`index`]: the watch-fed node/usage index (node cache mode, GPUs in use, replicas), its
//!   node views held in a [`node_table`] built for thousands of lookups per request;
//! - [`wire`]: the extender wire types, read case-insensitively, answered with Go names;
//! - [`server`]: HTTP(S) handlers, probes and metrics ([`metrics`]);
//! - [`synth`]: deterministic synthetic clusters for tests, benchmarks and load generation.

pub mod decide;
pub mod index;
pub mod metrics;
pub mod node_table;
pub mod rates;
pub mod server;
pub mod sources;
pub mod synth;
pub mod view;
pub mod wire;

pub use decide::{Config, FailReason, ReplicaSpread, ScoreContext, Weights, filter, prioritize};
pub use index::ClusterIndex;
pub use rates::{SpotRates, SpotRatesDoc};
pub use server::{Extender, TlsFiles, router, serve, serve_http};
pub use view::{NodeView, OwnerKey, PodPolicy, PodView};
