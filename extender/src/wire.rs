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
