//! The virtual cluster: simulated cloud nodes, pods, a scheduler stand-in, and the books.
//!
//! Time is integer seconds from the start of the trace. Events (arrivals, completions, node
//! boots, interruption notices, reclaims, evictions) are processed in time order at their
//! exact times; the scheduler stand-in binds pending pods right after every batch of events,
//! as kube-scheduler would within a second. Autoscalers run on their own interval and act
//! through [`Cluster::launch`], [`Cluster::terminate`], [`Cluster::set_cordon`] and
//! [`Cluster::request_eviction`].
//!
//! # Simulated cloud
//! - A launched node is billed from the launch request until it is terminated or reclaimed
//!   (per second, the way EC2, GCE and Azure bill Linux instances).
//! - It registers as a Ready node after `boot_s` and exposes its GPUs after a further
//!   `gpu_ready_s` (driver + device plugin). Pods are only bound once GPUs are allocatable.
//! - A spot node draws its reclaim time at launch from an exponential lifetime whose hazard
//!   is the instance type's per-hour interruption probability (see the catalog). The notice
//!   arrives `notice_s` earlier (AWS 120 s, GCP and Azure 30 s). Draws are keyed by
//!   (seed, instance type, n-th spot launch of that type), so every policy that launches its
//!   n-th spot node of a type gets the same draw ("common random numbers").
//!
//! # Lost-work model
//! A pod that is evicted or killed restarts from its last checkpoint: with a checkpoint
//! interval `c`, the work since the last multiple of `c` of its run is lost; without one
//! (the default, since the trace says nothing about checkpoints) all work of that run is
//! lost and the pod starts over. Lost GPU-hours = GPUs × lost seconds. Latency-sensitive
//! services (openb QoS `LS`) are the exception: a serving replica makes no progress that a
//! restart could lose, so it loses no work; it continues its lifetime after a new wait,
//! which is counted in the waiting time and pending GPU-minutes like any other wait.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use gpu_autoscaler_api::{CapacityType, EvictionPriority};
use serde::Serialize;

/// What a node of one instance type looks like, with its price for one capacity type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeShape {
    pub instance_type: String,
    pub gpus: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub price_per_hour: f64,
    /// Per-hour reclaim probability (spot only).
    pub hourly_interruption: Option<f64>,
}

/// Cluster-wide settings of the simulated cloud.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudTiming {
    pub boot_s: i64,
    pub gpu_ready_s: i64,
    pub notice_s: i64,
    pub checkpoint_s: Option<i64>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopCause {
    /// The policy drained the node for an interruption notice.
    InterruptionDrain,
    /// The node was reclaimed with the pod still on it.
    Reclaimed,
    /// The policy moved the pod to remove an underused node.
    ScaleDown,
    /// The policy terminated the node with the pod still on it.
    Terminated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: usize,
    pub name: String,
    pub pool: String,
    pub capacity: CapacityType,
    pub shape: NodeShape,
    pub labels: BTreeMap<String, String>,
    pub requested_at: i64,
    pub registered_at: i64,
    pub gpu_ready_at: i64,
    /// Terminated, reclaimed or cancelled at.
    pub ended_at: Option<i64>,
    pub unschedulable: bool,
    /// Drawn reclaim time (spot); only effective if the node still exists then.
    pub reclaim_at: Option<i64>,
    /// Set once the notice time has passed.
    pub notice: Option<i64>,
    pub reclaimed: bool,
    pub used_gpus: u32,
    pub used_cpu: u64,
    pub used_mem: u64,
    /// Σ of running pods' GPU shares (milli-GPU), the utilization proxy.
    pub used_share_milli: u64,
    pub pods: Vec<usize>,
}

impl Node {
    pub fn alive(&self) -> bool {
        self.ended_at.is_none()
    }
    pub fn registered(&self, now: i64) -> bool {
        self.alive() && now >= self.registered_at
    }
    pub fn gpus_allocatable(&self, now: i64) -> bool {
        self.alive() && now >= self.gpu_ready_at
    }
    /// Accepts new pods: GPUs up, not cordoned, no reclaim notice.
    pub fn schedulable(&self, now: i64) -> bool {
        self.gpus_allocatable(now) && !self.unschedulable && self.notice.is_none()
    }
    pub fn fits(&self, pod: &Pod) -> bool {
        self.used_gpus + pod.gpus <= self.shape.gpus
            && self.used_cpu + pod.cpu_millis <= self.shape.cpu_millis
            && self.used_mem + pod.memory_bytes <= self.shape.memory_bytes
    }
    /// Requested GPU share of the node (0..1).
    pub fn gpu_request_ratio(&self) -> f64 {
        if self.shape.gpus == 0 {
            0.0
        } else {
            f64::from(self.used_gpus) / f64::from(self.shape.gpus)
        }
    }
    /// Seconds billed up to `now`.
    pub fn billed_seconds(&self, now: i64) -> i64 {
        (self.ended_at.unwrap_or(now).min(now) - self.requested_at).max(0)
    }
}

/// One run of a pod on a node (for conservation checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub pod: usize,
    pub node: usize,
    pub started: i64,
    pub ended: i64,
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    NotArrived,
    Pending,
    Running { node: usize, started: i64 },
    Done { at: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub id: usize,
    pub name: String,
    pub gpus: u32,
    pub gpu_milli: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub priority: EvictionPriority,
    /// Allowed capacity types, most preferred first.
    pub tier: Vec<CapacityType>,
    pub arrival: i64,
    /// Work left, in seconds.
    pub remaining_s: i64,
    pub state: PodState,
    /// Incremented at every start and stop, so stale completion events are ignored.
    pub attempt: u32,
    pub pending_since: Option<i64>,
    /// First failed scheduling attempt of the current wait.
    pub unschedulable_since: Option<i64>,
    pub wait_s: i64,
    pub first_start: Option<i64>,
    pub eviction_requested: bool,
    pub never_scheduled_in_trace: bool,
    /// A long-running service (latency-sensitive): its output is serving, not progress, so
    /// a restart loses no work, only the time until it runs again; its lifetime continues.
    pub service: bool,
}

impl Pod {
    pub fn tolerates_spot(&self) -> bool {
        self.tier.is_empty() || self.tier.contains(&CapacityType::Spot)
    }
    pub fn allows(&self, ct: CapacityType) -> bool {
        self.tier.is_empty() || self.tier.contains(&ct)
    }
    fn rank(&self, ct: CapacityType) -> usize {
        self.tier.iter().position(|c| *c == ct).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    // Order matters at equal times: nodes become usable and work finishes before new pods
    // arrive and before reclaims, so a completion at the reclaim second is not lost work.
    GpuReady(usize),
    Register(usize),
    Complete(usize, u32),
    Arrive(usize),
    Notice(usize),
    Evict(usize, u32, usize),
    Reclaim(usize),
}

/// Running totals (integrals over time) and counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Books {
    /// Σ alive nodes' GPUs × seconds (paid GPU capacity).
    pub paid_gpu_s: f64,
    /// Σ running pods' GPUs × seconds.
    pub allocated_gpu_s: f64,
    /// Σ pending pods' GPUs × seconds.
    pub pending_gpu_s: f64,
    /// Σ alive nodes' price × seconds / 3600, per capacity type.
    pub cost_by_capacity: BTreeMap<String, f64>,
    /// Σ nodes alive × seconds per capacity type.
    pub node_s_by_capacity: BTreeMap<String, f64>,
    pub interruptions: u64,
    pub evicted_by_priority: BTreeMap<String, u64>,
    pub killed_at_reclaim: u64,
    pub lost_gpu_s_interruption: f64,
    pub lost_gpu_s_scale_down: f64,
    pub scale_down_restarts: u64,
    /// Service pods stopped and started again (no work lost; counted in waits).
    pub service_restarts: u64,
    pub launches: BTreeMap<String, u64>,
    /// Launches per "capacity type/instance type".
    pub launches_by_type: BTreeMap<String, u64>,
    pub peak_nodes: BTreeMap<String, u64>,
    pub peak_nodes_total: u64,
}

/// Current totals, updated at every change.
#[derive(Debug, Clone, Default)]
struct Live {
    paid_gpus: u64,
    allocated_gpus: u64,
    pending_gpus: u64,
    /// Capacity type -> (Σ price per hour, node count, GPUs) of alive nodes.
    by_capacity: BTreeMap<CapacityType, (f64, u64, u64)>,
}

/// Instantaneous figures for charts and progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Gauges {
    /// Alive nodes (booting included) per capacity type.
    pub nodes: BTreeMap<String, u64>,
    pub gpus: BTreeMap<String, u64>,
    pub allocated_gpus: u64,
    pub pending_gpus: u64,
    /// Cost so far of on-demand and spot nodes (per-second billing), USD.
    pub cost: f64,
}

/// The virtual cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub now: i64,
    pub timing: CloudTiming,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub books: Books,
    pub runs: Vec<RunRecord>,
    events: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    spot_launches: BTreeMap<String, u64>,
    /// Pods whose wait may end: set when capacity or pods changed.
    dirty: bool,
    /// Pending pods by (pending since, arrival, id): the scheduler's queue.
    queue: std::collections::BTreeSet<(i64, i64, usize)>,
    live: Live,
    by_name: std::collections::HashMap<String, usize>,
    /// Nodes not yet ended, and pods arrived but not done: so per-tick views cost
    /// O(cluster now), not O(everything ever).
    alive: std::collections::BTreeSet<usize>,
    active: std::collections::BTreeSet<usize>,
    last_advance: i64,
}

impl Cluster {
    pub fn new(timing: CloudTiming, pods: Vec<Pod>, start: i64) -> Self {
        let mut c = Self {
            now: start,
            timing,
            nodes: Vec::new(),
            pods,
            books: Books::default(),
            runs: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            spot_launches: BTreeMap::new(),
            dirty: false,
            queue: Default::default(),
            live: Live::default(),
            by_name: Default::default(),
            alive: Default::default(),
            active: Default::default(),
            last_advance: start,
        };
        c.by_name = c.pods.iter().map(|p| (p.name.clone(), p.id)).collect();
        for i in 0..c.pods.len() {
            let at = c.pods[i].arrival.max(start);
            c.push(at, Ev::Arrive(i));
        }
        c
    }

    fn push(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    /// Time of the next pending event, if any.
    pub fn next_event_time(&self) -> Option<i64> {
        self.events.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Integrates the books up to `to` at the current state (kept as running counters, so
    /// this is O(capacity types), not O(nodes + pods)).
    fn advance(&mut self, to: i64) {
        let dt = (to - self.last_advance) as f64;
        if dt <= 0.0 {
            return;
        }
        self.books.paid_gpu_s += self.live.paid_gpus as f64 * dt;
        self.books.allocated_gpu_s += self.live.allocated_gpus as f64 * dt;
        self.books.pending_gpu_s += self.live.pending_gpus as f64 * dt;
        for (ct, (price, count, _)) in &self.live.by_capacity {
            if *count > 0 {
                *self
                    .books
                    .cost_by_capacity
                    .entry(ct.to_string())
                    .or_default() += price * dt / 3600.0;
                *self
                    .books
                    .node_s_by_capacity
                    .entry(ct.to_string())
                    .or_default() += *count as f64 * dt;
            }
        }
        self.last_advance = to;
    }

    /// Processes every event up to and including `until`, binding pods as they come.
    pub fn run_until(&mut self, until: i64) {
        while let Some(t) = self.next_event_time() {
            if t > until {
                break;
            }
            self.advance(t);
            self.now = t;
            while self.next_event_time() == Some(t) {
                if let Some(Reverse((_, _, ev))) = self.events.pop() {
                    self.handle(ev);
                }
            }
            self.schedule();
        }
        self.advance(until);
        self.now = until;
        self.schedule();
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Arrive(p) => {
                let pod = &mut self.pods[p];
                pod.state = PodState::Pending;
                pod.pending_since = Some(now);
                self.queue.insert((now, pod.arrival, p));
                self.live.pending_gpus += u64::from(pod.gpus);
                self.active.insert(p);
                self.dirty = true;
            }
            Ev::Register(_) => {}
            Ev::GpuReady(n) => {
                if self.nodes[n].alive() {
                    self.dirty = true;
                }
            }
            Ev::Complete(p, attempt) => {
                if self.pods[p].attempt == attempt
                    && let PodState::Running { node, started } = self.pods[p].state
                {
                    self.unbind(p, node);
                    self.runs.push(RunRecord {
                        pod: p,
                        node,
                        started,
                        ended: now,
                        completed: true,
                    });
                    let pod = &mut self.pods[p];
                    pod.remaining_s = 0;
                    pod.state = PodState::Done { at: now };
                    self.active.remove(&p);
                    self.dirty = true;
                }
            }
            Ev::Notice(n) => {
                let node = &mut self.nodes[n];
                // An interruption is counted when the cloud announces it, whether the node
                // is then drained and terminated by the policy or reclaimed with pods on it.
                if node.alive() && node.reclaim_at.is_some() {
                    node.notice = Some(now);
                    self.books.interruptions += 1;
                }
            }
            Ev::Reclaim(n) => {
                if self.nodes[n].alive() {
                    self.nodes[n].reclaimed = true;
                    self.end_node(n, StopCause::Reclaimed);
                }
            }
            Ev::Evict(p, attempt, cause) => {
                let cause = if cause == 0 {
                    StopCause::InterruptionDrain
                } else {
                    StopCause::ScaleDown
                };
                if self.pods[p].attempt == attempt
                    && let PodState::Running { .. } = self.pods[p].state
                {
                    self.stop_pod(p, cause);
                }
            }
        }
    }

    fn unbind(&mut self, p: usize, n: usize) {
        let pod = &self.pods[p];
        let (g, c, m, share) = (
            pod.gpus,
            pod.cpu_millis,
            pod.memory_bytes,
            u64::from(pod.gpus) * u64::from(pod.gpu_milli),
        );
        let node = &mut self.nodes[n];
        node.used_gpus -= g;
        node.used_cpu -= c;
        node.used_mem -= m;
        node.used_share_milli -= share;
        node.pods.retain(|x| *x != p);
        self.live.allocated_gpus -= u64::from(g);
    }

    /// Stops a running pod (eviction or node loss), applying the lost-work model, and puts it
    /// back in the queue.
    fn stop_pod(&mut self, p: usize, cause: StopCause) {
        let PodState::Running { node, started } = self.pods[p].state else {
            return;
        };
        self.unbind(p, node);
        let now = self.now;
        self.runs.push(RunRecord {
            pod: p,
            node,
            started,
            ended: now,
            completed: false,
        });
        let pod = &mut self.pods[p];
        let ran = now - started;
        let saved = match self.timing.checkpoint_s {
            _ if pod.service => ran,
            Some(c) if c > 0 => ran / c * c,
            _ => 0,
        };
        if pod.service {
            self.books.service_restarts += 1;
        }
        let lost = (ran - saved) as f64 * f64::from(pod.gpus);
        pod.remaining_s -= saved;
        pod.attempt += 1;
        pod.state = PodState::Pending;
        pod.pending_since = Some(now);
        pod.unschedulable_since = None;
        pod.eviction_requested = false;
        self.queue.insert((now, pod.arrival, p));
        self.live.pending_gpus += u64::from(pod.gpus);
        match cause {
            StopCause::InterruptionDrain => {
                *self
                    .books
                    .evicted_by_priority
                    .entry(pod.priority.to_string())
                    .or_default() += 1;
                self.books.lost_gpu_s_interruption += lost;
            }
            StopCause::Reclaimed => {
                self.books.killed_at_reclaim += 1;
                self.books.lost_gpu_s_interruption += lost;
            }
            StopCause::ScaleDown | StopCause::Terminated => {
                self.books.scale_down_restarts += 1;
                self.books.lost_gpu_s_scale_down += lost;
            }
        }
        self.dirty = true;
    }

    fn end_node(&mut self, n: usize, cause: StopCause) {
        let pods = self.nodes[n].pods.clone();
        for p in pods {
            self.stop_pod(p, cause);
        }
        self.nodes[n].ended_at = Some(self.now);
        self.alive.remove(&n);
        let node = &self.nodes[n];
        self.live.paid_gpus -= u64::from(node.shape.gpus);
        if let Some(e) = self.live.by_capacity.get_mut(&node.capacity) {
            e.0 -= node.shape.price_per_hour;
            e.1 -= 1;
            e.2 -= u64::from(node.shape.gpus);
        }
        self.dirty = true;
    }

    /// Launches a node now. Spot nodes draw their reclaim time.
    pub fn launch(
        &mut self,
        pool: &str,
        capacity: CapacityType,
        shape: &NodeShape,
        labels: BTreeMap<String, String>,
    ) -> usize {
        let now = self.now;
        self.launch_at(pool, capacity, shape, labels, now)
    }

    /// Launches a node requested at `at` (≤ now; used to start a static fleet already booted).
    pub fn launch_at(
        &mut self,
        pool: &str,
        capacity: CapacityType,
        shape: &NodeShape,
        labels: BTreeMap<String, String>,
        at: i64,
    ) -> usize {
        let id = self.nodes.len();
        let registered_at = at + self.timing.boot_s;
        let gpu_ready_at = registered_at + self.timing.gpu_ready_s;
        let mut reclaim_at = None;
        if capacity == CapacityType::Spot
            && let Some(h) = shape.hourly_interruption.filter(|h| *h > 0.0 && *h < 1.0)
        {
            let k = self
                .spot_launches
                .entry(shape.instance_type.clone())
                .or_default();
            *k += 1;
            let u = draw(self.timing.seed, &shape.instance_type, *k);
            // Exponential lifetime with hazard λ = −ln(1 − h) per hour.
            let lambda_per_s = -(1.0 - h).ln() / 3600.0;
            let life = (-(1.0 - u).ln() / lambda_per_s).min(1e12) as i64;
            let at_reclaim = at + life.max(1);
            reclaim_at = Some(at_reclaim);
            let notice_at = (at_reclaim - self.timing.notice_s).max(at);
            self.push(notice_at, Ev::Notice(id));
            self.push(at_reclaim, Ev::Reclaim(id));
        }
        self.nodes.push(Node {
            id,
            name: format!("{pool}-{id:05}"),
            pool: pool.to_string(),
            capacity,
            shape: shape.clone(),
            labels,
            requested_at: at,
            registered_at,
            gpu_ready_at,
            ended_at: None,
            unschedulable: false,
            reclaim_at,
            notice: None,
            reclaimed: false,
            used_gpus: 0,
            used_cpu: 0,
            used_mem: 0,
            used_share_milli: 0,
            pods: Vec::new(),
        });
        self.live.paid_gpus += u64::from(shape.gpus);
        let e = self.live.by_capacity.entry(capacity).or_default();
        e.0 += shape.price_per_hour;
        e.1 += 1;
        e.2 += u64::from(shape.gpus);
        self.push(registered_at.max(self.now), Ev::Register(id));
        self.push(gpu_ready_at.max(self.now), Ev::GpuReady(id));
        self.alive.insert(id);
        *self.books.launches.entry(capacity.to_string()).or_default() += 1;
        *self
            .books
            .launches_by_type
            .entry(format!("{capacity}/{}", shape.instance_type))
            .or_default() += 1;
        self.note_peaks();
        id
    }

    fn note_peaks(&mut self) {
        let mut total = 0;
        for (ct, (_, count, _)) in &self.live.by_capacity {
            let e = self.books.peak_nodes.entry(ct.to_string()).or_default();
            *e = (*e).max(*count);
            total += count;
        }
        self.books.peak_nodes_total = self.books.peak_nodes_total.max(total);
    }

    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            allocated_gpus: self.live.allocated_gpus,
            pending_gpus: self.live.pending_gpus,
            // Reserved capacity is costed as a commitment at the end (see run.rs).
            cost: self
                .books
                .cost_by_capacity
                .iter()
                .filter(|(k, _)| k.as_str() != "reserved")
                .map(|(_, v)| v)
                .sum(),
            ..Gauges::default()
        };
        for (ct, (_, count, gpus)) in &self.live.by_capacity {
            g.nodes.insert(ct.to_string(), *count);
            g.gpus.insert(ct.to_string(), *gpus);
        }
        g
    }

    /// Terminates (or cancels, if still booting) a node now; pods still on it restart.
    pub fn terminate(&mut self, n: usize) {
        if self.nodes.get(n).is_some_and(Node::alive) {
            self.end_node(n, StopCause::Terminated);
        }
    }

    /// A pod by name (trace names are unique).
    pub fn pod_by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Asks the scheduler stand-in to look at the queue again (after direct node edits).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn set_cordon(&mut self, n: usize, cordoned: bool) {
        if let Some(node) = self.nodes.get_mut(n) {
            node.unschedulable = cordoned;
            if !cordoned {
                self.dirty = true;
            }
        }
    }

    /// Evicts a running pod at `at` (≥ now), once. `for_interruption` selects the books.
    pub fn request_eviction(&mut self, p: usize, at: i64, for_interruption: bool) {
        let Some(pod) = self.pods.get_mut(p) else {
            return;
        };
        if pod.eviction_requested || !matches!(pod.state, PodState::Running { .. }) {
            return;
        }
        pod.eviction_requested = true;
        let attempt = pod.attempt;
        let at = at.max(self.now);
        self.push(
            at,
            Ev::Evict(p, attempt, if for_interruption { 0 } else { 1 }),
        );
    }

    /// The scheduler stand-in: binds pending pods in arrival order, first fit, most preferred
    /// capacity type first; spot nodes carry the spot taint, which only pods whose tier
    /// preference allows spot tolerate.
    pub fn schedule(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let now = self.now;
        let pending: Vec<(i64, i64, usize)> = self.queue.iter().copied().collect();
        let usable: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].schedulable(now))
            .collect();
        for key in pending {
            let p = key.2;
            let pod = &self.pods[p];
            let mut best: Option<(usize, usize)> = None;
            for &n in &usable {
                let node = &self.nodes[n];
                if !pod.allows(node.capacity) || !node.fits(pod) {
                    continue;
                }
                let rank = pod.rank(node.capacity);
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, n));
                    if rank == 0 {
                        break;
                    }
                }
            }
            match best {
                Some((_, n)) => {
                    self.queue.remove(&key);
                    self.bind(p, n);
                }
                None => {
                    let pod = &mut self.pods[p];
                    pod.unschedulable_since.get_or_insert(now);
                }
            }
        }
    }

    fn bind(&mut self, p: usize, n: usize) {
        let now = self.now;
        let pod = &mut self.pods[p];
        pod.wait_s += now - pod.pending_since.unwrap_or(now);
        pod.pending_since = None;
        pod.unschedulable_since = None;
        pod.first_start.get_or_insert(now);
        pod.attempt += 1;
        pod.state = PodState::Running {
            node: n,
            started: now,
        };
        let (attempt, ends) = (pod.attempt, now + pod.remaining_s.max(0));
        let share = u64::from(pod.gpus) * u64::from(pod.gpu_milli);
        let (g, c, m) = (pod.gpus, pod.cpu_millis, pod.memory_bytes);
        let node = &mut self.nodes[n];
        node.used_gpus += g;
        node.used_cpu += c;
        node.used_mem += m;
        node.used_share_milli += share;
        node.pods.push(p);
        self.live.allocated_gpus += u64::from(g);
        self.live.pending_gpus -= u64::from(g);
        self.push(ends, Ev::Complete(p, attempt));
    }

    /// Stops the clock: every node still alive is billed up to `end`.
    pub fn finish(&mut self, end: i64) {
        self.run_until(end);
    }

    /// Nodes alive now (booting included), oldest first.
    pub fn alive_nodes(&self) -> impl Iterator<Item = &Node> {
        self.alive.iter().map(|&n| &self.nodes[n])
    }

    /// Pods that arrived and are not done (pending or running), by id.
    pub fn active_pods(&self) -> impl Iterator<Item = &Pod> {
        self.active.iter().map(|&p| &self.pods[p])
    }

    /// Pending pods in queue order.
    pub fn pending_pods(&self) -> impl Iterator<Item = &Pod> {
        self.queue.iter().map(|&(_, _, p)| &self.pods[p])
    }
}

/// A uniform draw in [0, 1) from (seed, key, k): splitmix64 over an FNV-1a hash of the key,
/// stable across platforms and library versions.
pub fn draw(seed: u64, key: &str, k: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = seed ^ h ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::draw;

    #[test]
    fn draws_are_stable_uniform_and_keyed() {
        let n = 20_000;
        let xs: Vec<f64> = (1..=n).map(|k| draw(42, "g5.12xlarge", k)).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let below = xs.iter().filter(|x| **x < 0.1).count() as f64 / n as f64;
        assert!((below - 0.1).abs() < 0.01, "{below}");
        assert_eq!(draw(42, "g5.12xlarge", 7), draw(42, "g5.12xlarge", 7));
        assert_ne!(draw(42, "g5.12xlarge", 7), draw(42, "g6.12xlarge", 7));
    }
}
