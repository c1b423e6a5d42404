//! Wire types of `k8s.io/kube-scheduler/extender/v1`.
//!
//! The Go structs carry no json tags, so kube-scheduler writes the Go field names (`Pod`,
//! `Nodes`, `NodeNames`) and Go's decoder matches keys case-insensitively. We read the top-level
//! keys the same way (which also accepts the lowercase keys of old schedulers and hand-written
//! tests) and always answer with the exact Go names.
//!
//! Requests are decoded borrowing from the body: node names are `&str` slices of it and, in
//! full-NodeList mode, each Node stays raw JSON that is echoed back untouched if it passes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// `ExtenderArgs`.
#[derive(Debug, Default)]
pub struct ExtenderArgs<'a> {
    pub pod: Option<Pod>,
    /// `Nodes` (full mode): the items, each still raw JSON.
    pub nodes: Option<Vec<&'a RawValue>>,
    /// `NodeNames` (cache mode).
    pub node_names: Option<Vec<Name<'a>>>,
}

/// A node name borrowed from the request body when it contains no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name<'a>(pub Cow<'a, str>);

impl<'a> Name<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a node name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `v1.NodeList`: only `items` matters (metadata and type meta are dropped).
#[derive(Deserialize)]
struct NodeListIn<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

impl<'de> Deserialize<'de> for ExtenderArgs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtenderArgs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ExtenderArgs object with Pod and Nodes or NodeNames")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = ExtenderArgs::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key.eq_ignore_ascii_case("pod") {
                        out.pod = map.next_value::<Option<Pod>>()?;
                    } else if key.eq_ignore_ascii_case("nodes") {
                        out.nodes = map
                            .next_value::<Option<NodeListIn<'de>>>()?
                            .map(|l| l.items.unwrap_or_default());
                    } else if key.eq_ignore_ascii_case("nodenames") {
                        out.node_names = map.next_value::<Option<Vec<Name<'de>>>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `v1.NodeList` as we answer it.
#[derive(Debug, Serialize)]
pub struct NodeListOut<'a> {
    pub metadata: BTreeMap<String, String>,
    pub items: Vec<&'a RawValue>,
}

/// `ExtenderFilterResult`.
///
/// Every failed node is listed in both `FailedNodes` and `FailedAndUnresolvableNodes`:
/// kube-scheduler 1.21+ lets the unresolvable map take precedence (so preemption skips the
/// node), while 1.20, which predates that field, still learns the reason from `FailedNodes`.
#[derive(Debug, Serialize, Default)]
pub struct FilterResult<'a> {
    #[serde(rename = "Nodes")]
    pub nodes: Option<NodeListOut<'a>>,
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<&'a str>>,
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: BTreeMap<&'a str, String>,
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable_nodes: BTreeMap<&'a str, String>,
    #[serde(rename = "Error")]
    pub error: String,
}

impl FilterResult<'_> {
    pub fn error(msg: impl Into<String>) -> FilterResult<'static> {
        FilterResult {
            error: msg.into(),
            ..Default::default()
        }
    }
}

/// One `HostPriority`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostPriority<'a> {
    #[serde(rename = "Host")]
    pub host: &'a str,
    #[serde(rename = "Score")]
    pub score: i64,
}

/// Hand-written answer encoding.
///
/// At 5,000 nodes an answer is 100-200 KB; building `BTreeMap<&str, String>`s and running
/// them through serde cost more than the decision itself. These writers produce exactly the
/// bytes `serde_json::to_vec` produces for [`FilterResult`] and `[HostPriority]` (same key
/// order, same string escaping, failed nodes sorted by name with the last duplicate winning,
/// as a `BTreeMap` would), into one pre-sized buffer. The unit tests below compare them with
/// serde byte for byte.
pub mod encode {
    use serde_json::value::RawValue;

    /// The nodes that passed: names (cache mode) or raw Node objects (full mode).
    #[derive(Debug, Clone, Copy)]
    pub enum Passed<'a, 'b> {
        Names(&'b [&'a str]),
        Items(&'b [&'a RawValue]),
    }

    /// Failed nodes: `(node name, index into reasons)`; each reason is already a JSON string
    /// literal (quotes included, see [`json_string`]), shared by every node failing for it.
    #[derive(Debug, Default)]
    pub struct Failed<'a> {
        pub entries: Vec<(&'a str, u32)>,
        pub reasons: Vec<Vec<u8>>,
    }

    impl Failed<'_> {
        pub fn len(&self) -> usize {
            self.entries.len()
        }

        pub fn is_empty(&self) -> bool {
            self.entries.is_empty()
        }
    }

    /// Whether a byte must be escaped inside a JSON string (serde_json's rule: quote,
    /// backslash and control characters; everything else, UTF-8 included, goes verbatim).
    #[inline]
    fn needs_escape(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }

    /// Whether any byte of `s` needs escaping, eight bytes at a time: the byte-by-byte scan
    /// was a tenth of a 5,000-node answer's cost.
    #[inline]
    fn any_needs_escape(s: &[u8]) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // The classic "has a zero byte" / "has a byte below n" word tests: each says exactly
        // whether any byte qualifies; the byte-wise recheck of the chunk is only a guard.
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let word_needs_escape = |chunk: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let x = u64::from_le_bytes(w);
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
            let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
            let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
            control | quote | backslash != 0 && chunk.iter().any(|&b| needs_escape(b))
        };
        if s.len() < 8 {
            return s.iter().any(|&b| needs_escape(b));
        }
        let mut chunks = s.chunks_exact(8);
        if chunks.any(word_needs_escape) {
            return true;
        }
        // The tail as the last 8 bytes, overlapping the final full word: one word test
        // instead of up to seven byte tests.
        !chunks.remainder().is_empty() && word_needs_escape(&s[s.len() - 8..])
    }

    /// Appends `s` as a JSON string literal. Node names never need escaping (they are DNS
    /// subdomains), so the common case is one scan and a copy.
    pub fn json_string(buf: &mut Vec<u8>, s: &str) {
        buf.push(b'"');
        if !any_needs_escape(s.as_bytes()) {
            buf.extend_from_slice(s.as_bytes());
        } else {
            escape_into(buf, s);
        }
        buf.push(b'"');
    }

    #[cold]
    fn escape_into(buf: &mut Vec<u8>, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in s.as_bytes() {
            match b {
                b'"' => buf.extend_from_slice(b"\\\""),
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                0x08 => buf.extend_from_slice(b"\\b"),
                0x0c => buf.extend_from_slice(b"\\f"),
                0..=0x1f => buf.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
                _ => buf.push(b),
            }
        }
    }

    /// Appends a decimal integer.
    pub fn json_int(buf: &mut Vec<u8>, v: i64) {
        if (0..10).contains(&v) {
            // Scores are 0..=10; skip the general loop for the single-digit ones.
            buf.push(b'0' + v as u8);
            return;
        }
        if v < 0 {
            buf.push(b'-');
        }
        let mut n = v.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        buf.extend_from_slice(&digits[i..]);
    }

    /// Sorts failed entries by name and drops all but the last of equal names: the order and
    /// the winner a `BTreeMap` built by inserting them in request order would have. Requests
    /// whose names are already ascending and unique (the usual case) cost one pass.
    fn normalise(entries: &mut Vec<(&str, u32)>) {
        if entries.is_sorted_by(|a, b| a.0 < b.0) {
            return;
        }
        // Stable, so equal names keep request order and the last one is the latest insert.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = 0;
        for i in 0..entries.len() {
            let last_of_run = entries.get(i + 1).is_none_or(|next| next.0 != entries[i].0);
            if last_of_run {
                entries[out] = entries[i];
                out += 1;
            }
        }
        entries.truncate(out);
    }

    fn failed_map(buf: &mut Vec<u8>, failed: &Failed<'_>) {
        buf.push(b'{');
        for (i, (name, reason)) in failed.entries.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            json_string(buf, name);
            buf.push(b':');
            let text = failed
                .reasons
                .get(*reason as usize)
                .map_or(&b"\"\""[..], Vec::as_slice);
            buf.extend_from_slice(text);
        }
        buf.push(b'}');
    }

    /// An `ExtenderFilterResult` with `Error: ""`; every failed node appears in both
    /// `FailedNodes` and `FailedAndUnresolvableNodes` (see [`super::FilterResult`]).
    pub fn filter_result(passed: Passed<'_, '_>, failed: &mut Failed<'_>) -> Vec<u8> {
        normalise(&mut failed.entries);
        let failed_bytes: usize = failed
            .entries
            .iter()
            .map(|(n, r)| n.len() + 4 + failed.reasons.get(*r as usize).map_or(2, Vec::len))
            .sum();
        let passed_bytes: usize = match passed {
            Passed::Names(names) => names.iter().map(|n| n.len() + 3).sum(),
            Passed::Items(items) => items.iter().map(|i| i.get().len() + 1).sum(),
        };
        // Names are escape-free in practice, so this is exact or close to it.
        let mut buf = Vec::with_capacity(128 + passed_bytes + 2 * failed_bytes);
        match passed {
            Passed::Names(names) => {
                buf.extend_from_slice(b"{\"Nodes\":null,\"NodeNames\":[");
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    json_string(&mut buf, n);
                }
                buf.push(b']');
            }
            Passed::Items(items) => {
                buf.extend_from_slice(b"{\"Nodes\":{\"metadata\":{},\"items\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(item.get().as_bytes());
                }
                buf.extend_from_slice(b"]},\"NodeNames\":null");
            }
        }
        buf.extend_from_slice(b",\"FailedNodes\":");
        failed_map(&mut buf, failed);
        buf.extend_from_slice(b",\"FailedAndUnresolvableNodes\":");
        failed_map(&mut buf, failed);
        buf.extend_from_slice(b",\"Error\":\"\"}");
        buf
    }

    /// A `HostPriorityList`: `[{"Host":...,"Score":...},...]`.
    pub fn host_priorities<'a>(
        len: usize,
        hosts: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Vec<u8> {
        // `{"Host":"","Score":10},` is 23 bytes around the name; names average under 32.
        let mut buf = Vec::with_capacity(2 + len * (23 + 32));
        buf.push(b'[');
        for (i, (host, score)) in hosts.into_iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"Host\":");
            json_string(&mut buf, host);
            buf.extend_from_slice(b",\"Score\":");
            json_int(&mut buf, score);
            buf.push(b'}');
        }
        buf.push(b']');
        buf
    }
}

/// The owned, case-insensitive reading of answers, for tests and load tools.
pub mod read {
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// Looks a key up the way Go's decoder does.
    pub fn get<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
        obj.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// `(Host, Score)` pairs of a HostPriorityList.
    pub fn scores(v: &Value) -> BTreeMap<String, i64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|hp| {
                Some((
                    get(hp, "host")?.as_str()?.to_string(),
                    get(hp, "score")?.as_i64()?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_names_borrow() {
        let body = r#"{"pod":{"metadata":{"name":"p"}},"nodenames":["a","b\u0041"],"Extra":1}"#;
        let args: ExtenderArgs = serde_json::from_str(body).unwrap();
        assert_eq!(args.pod.unwrap().metadata.name.as_deref(), Some("p"));
        let names = args.node_names.unwrap();
        assert!(matches!(names[0].0, Cow::Borrowed("a")));
        assert_eq!(names[1].as_str(), "bA");
        assert!(args.nodes.is_none());

        let body = r#"{"Pod":{},"Nodes":{"metadata":{},"items":[{"metadata":{"name":"n"}}]},"NodeNames":null}"#;
        let args: ExtenderArgs = serde_json::from_str(body).unwrap();
        assert_eq!(args.nodes.unwrap()[0].get(), r#"{"metadata":{"name":"n"}}"#);
        assert!(args.node_names.is_none());
    }

    #[test]
    fn hand_encoding_matches_serde_byte_for_byte() {
        use super::encode::{self, Failed, Passed};
        // Every ASCII byte, some UTF-8, and the plain case.
        let odd: String = (0u8..128).map(char::from).collect::<String>() + "é✓/";
        for s in ["gpu-node-00001", "", odd.as_str()] {
            let mut buf = Vec::new();
            encode::json_string(&mut buf, s);
            assert_eq!(buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Each special byte at every position of strings longer than one 8-byte word, next
        // to multi-byte UTF-8 and DEL, which need no escaping.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}', 'é'] {
            for len in [1usize, 7, 8, 9, 15, 16, 17, 23] {
                for pos in 0..len {
                    let s: String = (0..len)
                        .map(|i| if i == pos { special } else { 'a' })
                        .collect();
                    let mut buf = Vec::new();
                    encode::json_string(&mut buf, &s);
                    assert_eq!(buf, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
        for v in [0i64, 7, 10, 11, 12345, -1, i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            encode::json_int(&mut buf, v);
            assert_eq!(buf, serde_json::to_vec(&v).unwrap());
        }

        let reasons = ["capacity \"spot\"", "cordoned\n"];
        // Unsorted, with a duplicate name whose later reason must win (BTreeMap semantics).
        let fails = [("n3", 0u32), ("n1", 1), ("a\\b", 0), ("n1", 0), ("n2", 1)];
        let failed = || Failed {
            entries: fails.to_vec(),
            reasons: reasons
                .iter()
                .map(|r| serde_json::to_vec(r).unwrap())
                .collect(),
        };
        let map: BTreeMap<&str, String> = fails
            .iter()
            .map(|(n, r)| (*n, reasons[*r as usize].to_string()))
            .collect();

        let passed = ["p1", "p\"2"];
        let want = FilterResult {
            node_names: Some(passed.to_vec()),
            failed_nodes: map.clone(),
            failed_and_unresolvable_nodes: map.clone(),
            ..Default::default()
        };
        let got = encode::filter_result(Passed::Names(&passed), &mut failed());
        assert_eq!(
            String::from_utf8(got).unwrap(),
            serde_json::to_string(&want).unwrap()
        );

        let raw: Vec<Box<RawValue>> = [r#"{"metadata":{"name":"x"}}"#, r#"{ "a" : [1, 2] }"#]
            .iter()
            .map(|s| RawValue::from_string(s.to_string()).unwrap())
            .collect();
        let items: Vec<&RawValue> = raw.iter().map(|b| &**b).collect();
        let want = FilterResult {
            nodes: Some(NodeListOut {
                metadata: BTreeMap::new(),
                items: items.clone(),
            }),
            failed_nodes: map.clone(),
            failed_and_unresolvable_nodes: map,
            ..Default::default()
        };
        let got = encode::filter_result(Passed::Items(&items), &mut failed());
        assert_eq!(
            String::from_utf8(got).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        // Nothing passed, nothing failed.
        let got = encode::filter_result(Passed::Names(&[]), &mut Failed::default());
        let want = FilterResult {
            node_names: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(got, serde_json::to_vec(&want).unwrap());

        let hosts = [("a", 0i64), ("b\"", 10), ("c", 7)];
        let want: Vec<HostPriority> = hosts
            .iter()
            .map(|(h, s)| HostPriority { host: h, score: *s })
            .collect();
        assert_eq!(
            encode::host_priorities(hosts.len(), hosts),
            serde_json::to_vec(&want).unwrap()
        );
        assert_eq!(encode::host_priorities(0, []), b"[]");
    }

    #[test]
    fn answers_use_go_field_names() {
        let r = FilterResult {
            node_names: Some(vec!["a"]),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Nodes": null, "NodeNames": ["a"], "FailedNodes": {},
                               "FailedAndUnresolvableNodes": {}, "Error": ""})
        );
        let v = serde_json::to_value([HostPriority {
            host: "a",
            score: 7,
        }])
        .unwrap();
        assert_eq!(v, serde_json::json!([{"Host": "a", "Score": 7}]));
    }
}
