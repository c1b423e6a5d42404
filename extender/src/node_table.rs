//! The node views of cache mode, with a name lookup sized for one request's 5,000 probes.
//!
//! Every cache-mode request names up to thousands of nodes and the extender must find each
//! one. With a general-purpose map keyed by `Arc<str>`, each probe dereferenced a separately
//! allocated key string scattered over the heap, and those cache misses were half of a whole
//! decision's time. This table keeps everything a probe touches small and contiguous:
//! - `buckets`: open addressing, 8 bytes per bucket (a 32-bit hash tag and a slot number),
//!   at most half full, so a probe nearly always ends in its first bucket;
//! - `names`: every node's name packed into one byte buffer, located by `spans[slot]`, so the
//!   one string comparison a hit needs reads a few bytes from a ~16-byte-per-node buffer;
//! - `views`: the [`NodeView`]s themselves, dense, indexed by slot.
//!
//! At 5,000 nodes the probe structures take about 240 KB (a `HashMap<Arc<str>, u32>`'s entries
//! and key allocations about 370 KB, the keys spread over the heap), so one request's probes
//! mostly stay in L2. Lookups come in batches ([`NodeTable::get_all`]) so their misses overlap.
//!
//! Label values (pool, instance type, zone, region) are interned on insert: thousands of nodes
//! share a handful of them, so one shared `Arc` per value saves an allocation per node and
//! per label, and lets per-request memos match them by pointer instead of by text.
//!
//! Removal is rare (a node deleted from the cluster), so it simply rebuilds the buckets, and
//! compacts the name buffer once half of it is dead; both are O(nodes) and take tens of
//! microseconds at 5,000 nodes, under the index's write lock.

use std::collections::HashSet;
use std::sync::Arc;

use crate::view::NodeView;

/// A folded-multiply string hash for node names (the construction wyhash and foldhash use).
///
/// SipHash costs more than the filter check itself at thousands of lookups per request. Keys
/// are node names, which only the cluster's own kubelets and controllers create, so
/// resistance to chosen-key flooding is not needed (request names are only looked up, never
/// inserted). Short tails are read as overlapping words rather than copied into a zeroed
/// buffer: that copy was a library call plus a store-forwarding stall on every lookup.
#[inline]
pub fn name_hash(bytes: &[u8]) -> u64 {
    /// Odd constants with well-spread bits (rustc's FxHash, and the golden ratio).
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    const G: u64 = 0x9e37_79b9_7f4a_7c15;
    let len = bytes.len();
    let mut h = (len as u64).wrapping_mul(G);
    if len >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            h = fold_mul(h ^ word8(chunk), K);
        }
        if !chunks.remainder().is_empty() {
            // The last 8 bytes, overlapping the final full chunk.
            h = fold_mul(h ^ word8(&bytes[len - 8..]), K);
        }
    } else if len >= 4 {
        let lo = u64::from(word4(&bytes[..4]));
        let hi = u64::from(word4(&bytes[len - 4..]));
        h = fold_mul(h ^ (lo | (hi << 32)), K);
    } else if len > 0 {
        let w = u64::from(bytes[0])
            | (u64::from(bytes[len / 2]) << 8)
            | (u64::from(bytes[len - 1]) << 16);
        h = fold_mul(h ^ w, K);
    }
    // One more fold with a different constant: names differing only in their last byte
    // (gpu-node-00001, gpu-node-00002, ...) would otherwise land in neighbouring buckets,
    // and linear probing makes such runs slow.
    fold_mul(h ^ 0x2d35_8dcc_aa6c_78a5, G)
}

/// The 128-bit product of `a` and `b`, its halves xored: every input bit reaches the low bits,
/// which pick the bucket.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline]
fn word8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// `a == b` for short byte strings, a word at a time and inlined: node names are 10-60 bytes,
/// and the general `memcmp` call cost more than the comparison.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 <= n {
        if word8(&a[i..]) != word8(&b[i..]) {
            return false;
        }
        i += 8;
    }
    // The last 8 bytes, overlapping the final full word (a no-op recheck when n % 8 == 0).
    word8(&a[n - 8..]) == word8(&b[n - 8..])
}

#[inline]
fn word4(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// One bucket: the top 32 bits of the name's hash and the slot of its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    tag: u32,
    slot: u32,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tag: 0,
        slot: u32::MAX,
    };

    fn is_empty(self) -> bool {
        self.slot == u32::MAX
    }
}

/// Where a slot's name lies in the packed name buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// The node views plus the compact name lookup described in the module docs.
#[derive(Debug)]
pub struct NodeTable {
    /// Power-of-two length, never more than half occupied (so probes always end).
    buckets: Vec<Bucket>,
    names: Vec<u8>,
    /// Bytes of `names` no slot refers to any more (removed nodes).
    dead_name_bytes: usize,
    spans: Vec<Span>,
    views: Vec<NodeView>,
    /// Every label value seen since the table was built (a relist builds a new table, so
    /// values of long-gone nodes do not pile up).
    interned: HashSet<Arc<str>>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable::with_capacity(0)
    }
}

impl NodeTable {
    const MIN_BUCKETS: usize = 16;

    pub fn with_capacity(n: usize) -> Self {
        NodeTable {
            buckets: vec![Bucket::EMPTY; Self::buckets_for(n)],
            names: Vec::with_capacity(n * 16),
            dead_name_bytes: 0,
            spans: Vec::with_capacity(n),
            views: Vec::with_capacity(n),
            interned: HashSet::new(),
        }
    }

    /// Bucket count keeping `n` entries at most half full.
    fn buckets_for(n: usize) -> usize {
        n.saturating_mul(2)
            .max(Self::MIN_BUCKETS)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
    }

    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    #[inline]
    fn name_at(&self, slot: usize) -> &[u8] {
        let s = self.spans[slot];
        &self.names[s.start as usize..(s.start + s.len) as usize]
    }

    /// The slot of `name`, if present.
    #[inline]
    fn find(&self, name: &str) -> Option<usize> {
        let h = name_hash(name.as_bytes());
        let home = self.buckets[h as usize & (self.buckets.len() - 1)];
        self.find_from(name, h, home)
    }

    /// Continues a probe for `name` (hash `h`) whose home bucket has been read as `home`.
    #[inline]
    fn find_from(&self, name: &str, h: u64, home: Bucket) -> Option<usize> {
        let tag = (h >> 32) as u32;
        let mask = self.buckets.len() - 1;
        let mut i = h as usize & mask;
        let mut b = home;
        loop {
            if b.is_empty() {
                return None;
            }
            if b.tag == tag && same_bytes(self.name_at(b.slot as usize), name.as_bytes()) {
                return Some(b.slot as usize);
            }
            i = (i + 1) & mask;
            b = self.buckets[i];
        }
    }

    /// Puts `slot` (whose name hashes to `h`) into the first free bucket of its probe chain.
    fn place(buckets: &mut [Bucket], h: u64, slot: u32) {
        let mask = buckets.len() - 1;
        let mut i = h as usize & mask;
        while !buckets[i].is_empty() {
            i = (i + 1) & mask;
        }
        buckets[i] = Bucket {
            tag: (h >> 32) as u32,
            slot,
        };
    }

    /// Rebuilds the buckets for the current slots (after a removal or when growing).
    fn rebuild_buckets(&mut self, min_entries: usize) {
        let mut buckets = vec![Bucket::EMPTY; Self::buckets_for(min_entries)];
        for slot in 0..self.spans.len() {
            Self::place(&mut buckets, name_hash(self.name_at(slot)), slot as u32);
        }
        self.buckets = buckets;
    }

    #[inline]
    pub fn get(&self, name: &str) -> Option<&NodeView> {
        self.find(name).map(|slot| &self.views[slot])
    }

    /// Looks up every name in `names`, in order, appending what it finds (or `None`) to
    /// `out`.
    ///
    /// Same answers as calling [`NodeTable::get`] per name, but in batches: first the hashes
    /// of a batch and the loads of their home buckets, which do not depend on one another so
    /// the CPU overlaps their cache misses, then the comparisons. One at a time, each lookup
    /// waited for its own bucket's miss before the next could start.
    pub fn get_all<'t, S: AsRef<str>>(&'t self, names: &[S], out: &mut Vec<Option<&'t NodeView>>) {
        const BATCH: usize = 16;
        let mask = self.buckets.len() - 1;
        out.reserve(names.len());
        for chunk in names.chunks(BATCH) {
            let mut hashes = [0u64; BATCH];
            let mut home = [Bucket::EMPTY; BATCH];
            for ((name, h), b) in chunk.iter().zip(&mut hashes).zip(&mut home) {
                *h = name_hash(name.as_ref().as_bytes());
                *b = self.buckets[*h as usize & mask];
            }
            for ((name, h), b) in chunk.iter().zip(hashes).zip(home) {
                let slot = self.find_from(name.as_ref(), h, b);
                out.push(slot.map(|s| &self.views[s]));
            }
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut NodeView> {
        self.find(name).map(|slot| &mut self.views[slot])
    }

    pub fn values(&self) -> std::slice::Iter<'_, NodeView> {
        self.views.iter()
    }

    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, NodeView> {
        self.views.iter_mut()
    }

    /// The shared copy of a label value.
    fn intern(&mut self, value: &mut Option<Arc<str>>) {
        let Some(v) = value else {
            return;
        };
        match self.interned.get(&**v) {
            Some(shared) => *v = shared.clone(),
            None => {
                self.interned.insert(v.clone());
            }
        }
    }

    /// Inserts or replaces the view of `view.name`.
    pub fn insert(&mut self, mut view: NodeView) {
        for label in [
            &mut view.pool,
            &mut view.instance_type,
            &mut view.zone,
            &mut view.region,
        ] {
            self.intern(label);
        }
        if let Some(slot) = self.find(&view.name) {
            self.views[slot] = view;
            return;
        }
        let name = view.name.as_bytes();
        let (Ok(slot), Ok(start), Ok(len)) = (
            u32::try_from(self.views.len()),
            u32::try_from(self.names.len()),
            u32::try_from(name.len()),
        ) else {
            tracing::warn!(node = %view.name, "node index full; node ignored");
            return;
        };
        if slot == u32::MAX || start.checked_add(len).is_none() {
            tracing::warn!(node = %view.name, "node index full; node ignored");
            return;
        }
        if (self.views.len() + 1) * 2 > self.buckets.len() {
            self.rebuild_buckets(self.views.len() + 1);
        }
        self.names.extend_from_slice(name);
        self.spans.push(Span { start, len });
        Self::place(&mut self.buckets, name_hash(view.name.as_bytes()), slot);
        self.views.push(view);
    }

    /// Removes a node; the last view moves into its slot.
    pub fn remove(&mut self, name: &str) {
        let Some(slot) = self.find(name) else {
            return;
        };
        self.dead_name_bytes += self.spans[slot].len as usize;
        self.spans.swap_remove(slot);
        self.views.swap_remove(slot);
        if self.dead_name_bytes * 2 >= self.names.len() {
            self.compact_names();
        }
        self.rebuild_buckets(self.views.len());
    }

    /// Drops the bytes of removed names, keeping every slot's span valid.
    fn compact_names(&mut self) {
        let mut names = Vec::with_capacity(self.names.len() - self.dead_name_bytes);
        for span in &mut self.spans {
            let start = names.len() as u32;
            names.extend_from_slice(
                &self.names[span.start as usize..(span.start + span.len) as usize],
            );
            span.start = start;
        }
        self.names = names;
        self.dead_name_bytes = 0;
    }
}

impl FromIterator<NodeView> for NodeTable {
    fn from_iter<I: IntoIterator<Item = NodeView>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut table = NodeTable::with_capacity(iter.size_hint().0);
        for v in iter {
            table.insert(v);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn insert_replace_remove_keep_slots_consistent() {
        let mut t = NodeTable::default();
        for name in ["a", "b", "c", "d"] {
            t.insert(NodeView::named(name));
        }
        t.insert(NodeView {
            allocatable_gpus: 8,
            ..NodeView::named("b")
        });
        assert_eq!(t.len(), 4);
        assert_eq!(t.get("b").map(|v| v.allocatable_gpus), Some(8));
        // Removing from the middle moves "d" into the freed slot.
        t.remove("a");
        t.remove("zz");
        assert_eq!(t.len(), 3);
        assert!(t.get("a").is_none());
        for name in ["b", "c", "d"] {
            assert_eq!(t.get(name).map(|v| &*v.name), Some(name));
        }
        t.remove("d");
        t.remove("b");
        t.remove("c");
        assert!(t.is_empty() && t.get("c").is_none());
        let t: NodeTable = [NodeView::named("x"), NodeView::named("x")]
            .into_iter()
            .collect();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn empty_names_prefixes_and_long_names_are_distinct_keys() {
        let long = "n".repeat(300);
        let mut t = NodeTable::default();
        for name in ["", "a", "ab", long.as_str(), &long[..299]] {
            t.insert(NodeView::named(name));
        }
        for name in ["", "a", "ab", long.as_str(), &long[..299]] {
            assert_eq!(t.get(name).map(|v| &*v.name), Some(name));
        }
        assert!(t.get("abc").is_none() && t.get(&long[..298]).is_none());
    }

    #[test]
    fn label_values_are_shared_between_nodes() {
        let mut t = NodeTable::default();
        for name in ["a", "b"] {
            t.insert(NodeView {
                pool: Some(Arc::from("spot-a100")),
                zone: Some(Arc::from("z1")),
                ..NodeView::named(name)
            });
        }
        let (a, b) = (t.get("a").unwrap(), t.get("b").unwrap());
        assert!(Arc::ptr_eq(
            a.pool.as_ref().unwrap(),
            b.pool.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            a.zone.as_ref().unwrap(),
            b.zone.as_ref().unwrap()
        ));
        assert_eq!(a.instance_type, None);
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "bbcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghXjklmnopq",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    same_bytes(a.as_bytes(), b.as_bytes()),
                    a == b,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn grows_past_many_doublings_and_compacts_names() {
        let mut t = NodeTable::default();
        for i in 0..5000 {
            t.insert(NodeView::named(&format!("gpu-node-{i:05}")));
        }
        assert_eq!(t.len(), 5000);
        assert!(t.buckets.len() >= 10_000 && t.buckets.len().is_power_of_two());
        for i in (0..5000).step_by(2) {
            t.remove(&format!("gpu-node-{i:05}"));
        }
        // Half the name bytes died at some point, so the buffer was compacted.
        assert!(t.names.len() < 5000 * 14, "{} bytes", t.names.len());
        for i in 0..5000 {
            let name = format!("gpu-node-{i:05}");
            assert_eq!(t.get(&name).is_some(), i % 2 == 1, "{name}");
        }
    }

    #[test]
    fn name_hash_spreads_similar_names() {
        let hashes: std::collections::HashSet<u64> = (0..5000)
            .map(|i| name_hash(format!("gpu-node-{i:05}").as_bytes()))
            .collect();
        assert_eq!(hashes.len(), 5000);
        // The low bits pick the bucket: 5,000 names in 16,384 buckets should fill about as
        // many as random hashes would (~4,350), for short sequential and long EKS-style names.
        for name in [
            |i: usize| format!("gpu-node-{i:05}"),
            |i: usize| format!("ip-10-0-{}-{}.us-west-2.compute.internal", i / 256, i % 256),
        ] {
            let used: std::collections::HashSet<u64> = (0..5000)
                .map(|i| name_hash(name(i).as_bytes()) & 16_383)
                .collect();
            assert!(used.len() > 4_200, "{} of 16384 buckets", used.len());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, g)| Op::Insert(k, g)),
            any::<u8>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Any sequence of inserts, replacements and removals leaves the table answering
        /// exactly like an ordinary map.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut t = NodeTable::default();
            let mut model: BTreeMap<String, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, gpus) => {
                        let name = format!("node-{k}");
                        t.insert(NodeView { allocatable_gpus: gpus, ..NodeView::named(&name) });
                        model.insert(name, gpus);
                    }
                    Op::Remove(k) => {
                        let name = format!("node-{k}");
                        t.remove(&name);
                        model.remove(&name);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            let names: Vec<String> = (0..=255u8).map(|k| format!("node-{k}")).collect();
            let mut batch = Vec::new();
            t.get_all(&names, &mut batch);
            prop_assert_eq!(batch.len(), names.len());
            for (name, found) in names.iter().zip(batch) {
                let expected = model.get(name).copied();
                prop_assert_eq!(t.get(name).map(|v| v.allocatable_gpus), expected);
                prop_assert_eq!(found.map(|v| v.allocatable_gpus), expected);
            }
            let mut seen: Vec<&str> = t.values().map(|v| &*v.name).collect();
            seen.sort_unstable();
            let expected: Vec<&str> = model.keys().map(String::as_str).collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
