//! Which pods hold which GPU: the kubelet pod-resources API (`v1.PodResourcesLister/List`,
//! gRPC over the unix socket `/var/lib/kubelet/pod-resources/kubelet.sock`).
//!
//! A full gRPC stack (tonic + prost + codegen) would be the largest dependency of the agent for
//! one unary call, so the call is made by hand: HTTP/2 through hyper (already in the build),
//! the 5-byte gRPC message framing, and a protobuf decoder for the four messages we read.
//! Unknown fields are skipped by wire type, so newer kubelets (which add fields such as
//! `memory` or `dynamic_resources`) still decode.
//!
//! The NVIDIA device plugin names devices by GPU UUID (`GPU-…`); with time-slicing it appends
//! `::N` per replica, which is stripped so the pod maps to its physical GPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::gpu::PodRef;

pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
const LIST_PATH: &str = "/v1.PodResourcesLister/List";

#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    #[error("pod-resources socket {0}: {1}")]
    Connect(PathBuf, String),
    #[error("pod-resources call: {0}")]
    Call(String),
    #[error("pod-resources call timed out after {0:?}")]
    Timeout(Duration),
    #[error("pod-resources answered grpc-status {status}: {message}")]
    Status { status: String, message: String },
    #[error("pod-resources answer undecodable: {0}")]
    Decode(&'static str),
}

/// One container's devices of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerDevices {
    pub resource_name: String,
    pub device_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerResources {
    pub name: String,
    pub devices: Vec<ContainerDevices>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodResources {
    pub name: String,
    pub namespace: String,
    pub containers: Vec<ContainerResources>,
}

/// Calls `List` on the kubelet socket.
pub async fn list(
    socket: &Path,
    timeout: Duration,
) -> Result<Vec<PodResources>, PodResourcesError> {
    let call = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| PodResourcesError::Connect(socket.to_path_buf(), e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| PodResourcesError::Call(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "pod-resources connection closed");
            }
        });
        // ListPodResourcesRequest has no fields: an empty, uncompressed message.
        let request = Request::post(format!("http://localhost{LIST_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .map_err(|e| PodResourcesError::Call(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| PodResourcesError::Call(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| PodResourcesError::Call(e.to_string()))?;
        // grpc-status comes in the trailers, or in the headers of a trailers-only answer.
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status_of = |name: &str| {
            trailers
                .get(name)
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = status_of("grpc-status").unwrap_or_else(|| "missing".to_string());
        if status != "0" {
            return Err(PodResourcesError::Status {
                status,
                message: status_of("grpc-message").unwrap_or_default(),
            });
        }
        let body = collected.to_bytes();
        let message = unframe(&body)?;
        decode_list_response(message)
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| PodResourcesError::Timeout(timeout))?
}

/// GPU UUID → pods holding it, for the given resource names (`nvidia.com/gpu` and friends).
pub fn pods_by_device(
    pods: &[PodResources],
    is_gpu_resource: impl Fn(&str) -> bool,
) -> BTreeMap<String, Vec<PodRef>> {
    let mut out: BTreeMap<String, Vec<PodRef>> = BTreeMap::new();
    for pod in pods {
        for container in &pod.containers {
            for devices in container
                .devices
                .iter()
                .filter(|d| is_gpu_resource(&d.resource_name))
            {
                for id in &devices.device_ids {
                    let physical = id.split("::").next().unwrap_or(id).to_string();
                    let holder = PodRef {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        container: container.name.clone(),
                    };
                    let entry = out.entry(physical).or_default();
                    if !entry.contains(&holder) {
                        entry.push(holder);
                    }
                }
            }
        }
    }
    for holders in out.values_mut() {
        holders.sort();
    }
    out
}

/// Strips the gRPC length-prefixed framing of a single uncompressed message.
pub fn unframe(body: &[u8]) -> Result<&[u8], PodResourcesError> {
    let [compressed, a, b, c, d, rest @ ..] = body else {
        return Err(PodResourcesError::Decode("short gRPC frame"));
    };
    if *compressed != 0 {
        return Err(PodResourcesError::Decode("compressed gRPC message"));
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    rest.get(..len)
        .ok_or(PodResourcesError::Decode("truncated gRPC message"))
}

/// A protobuf field as read from the wire.
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, PodResourcesError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or(PodResourcesError::Decode("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PodResourcesError::Decode("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PodResourcesError> {
        if self.buf.len() < n {
            return Err(PodResourcesError::Decode("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, PodResourcesError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => {
                self.varint()?;
                Field::Varint
            }
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| PodResourcesError::Decode("length overflow"))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err(PodResourcesError::Decode("unsupported wire type")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn string(bytes: &[u8]) -> Result<String, PodResourcesError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| PodResourcesError::Decode("invalid UTF-8"))
}

/// `ListPodResourcesResponse { repeated PodResources pod_resources = 1; }`
pub fn decode_list_response(buf: &[u8]) -> Result<Vec<PodResources>, PodResourcesError> {
    let mut reader = Reader { buf };
    let mut pods = Vec::new();
    while let Some((number, field)) = reader.next()? {
        if let (1, Field::Bytes(b)) = (number, field) {
            pods.push(decode_pod(b)?);
        }
    }
    Ok(pods)
}

/// `PodResources { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; }`
fn decode_pod(buf: &[u8]) -> Result<PodResources, PodResourcesError> {
    let mut reader = Reader { buf };
    let mut pod = PodResources::default();
    while let Some((number, field)) = reader.next()? {
        match (number, field) {
            (1, Field::Bytes(b)) => pod.name = string(b)?,
            (2, Field::Bytes(b)) => pod.namespace = string(b)?,
            (3, Field::Bytes(b)) => pod.containers.push(decode_container(b)?),
            _ => {}
        }
    }
    Ok(pod)
}

/// `ContainerResources { string name = 1; repeated ContainerDevices devices = 2; ... }`
fn decode_container(buf: &[u8]) -> Result<ContainerResources, PodResourcesError> {
    let mut reader = Reader { buf };
    let mut container = ContainerResources::default();
    while let Some((number, field)) = reader.next()? {
        match (number, field) {
            (1, Field::Bytes(b)) => container.name = string(b)?,
            (2, Field::Bytes(b)) => container.devices.push(decode_devices(b)?),
            _ => {}
        }
    }
    Ok(container)
}

/// `ContainerDevices { string resource_name = 1; repeated string device_ids = 2; TopologyInfo topology = 3; }`
fn decode_devices(buf: &[u8]) -> Result<ContainerDevices, PodResourcesError> {
    let mut reader = Reader { buf };
    let mut devices = ContainerDevices::default();
    while let Some((number, field)) = reader.next()? {
        match (number, field) {
            (1, Field::Bytes(b)) => devices.resource_name = string(b)?,
            (2, Field::Bytes(b)) => devices.device_ids.push(string(b)?),
            _ => {}
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// Encodes the kubelet's answer the way protoc-generated Go code would, including fields
    /// we ignore (cpu_ids packed, topology, memory), to prove they are skipped.
    fn encoded_answer() -> Vec<u8> {
        let mut devices = Vec::new();
        bytes_field(1, b"nvidia.com/gpu", &mut devices);
        bytes_field(2, b"GPU-aaaa", &mut devices);
        bytes_field(2, b"GPU-bbbb::3", &mut devices);
        let mut topology = Vec::new();
        bytes_field(1, &[8, 1], &mut topology); // NUMANode { int64 ID = 1 }
        bytes_field(3, &topology, &mut devices);

        let mut other = Vec::new();
        bytes_field(1, b"example.com/nic", &mut other);
        bytes_field(2, b"nic0", &mut other);

        let mut container = Vec::new();
        bytes_field(1, b"trainer", &mut container);
        bytes_field(2, &devices, &mut container);
        bytes_field(2, &other, &mut container);
        bytes_field(3, &[2, 3, 200, 1], &mut container); // packed cpu_ids
        varint(9 << 3, &mut container); // an unknown varint field
        varint(300, &mut container);

        let mut pod = Vec::new();
        bytes_field(1, b"train-0", &mut pod);
        bytes_field(2, b"ml", &mut pod);
        bytes_field(3, &container, &mut pod);

        let mut answer = Vec::new();
        bytes_field(1, &pod, &mut answer);
        let mut empty_pod = Vec::new();
        bytes_field(1, b"idle", &mut empty_pod);
        bytes_field(2, b"default", &mut empty_pod);
        bytes_field(1, &empty_pod, &mut answer);
        answer
    }

    #[test]
    fn decodes_a_kubelet_answer_and_maps_gpus_to_pods() {
        let message = encoded_answer();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let pods = decode_list_response(unframe(&framed).expect("frame")).expect("decode");
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "train-0");
        assert_eq!(pods[0].containers[0].devices.len(), 2);
        let map = pods_by_device(&pods, |r| r == "nvidia.com/gpu");
        assert_eq!(map.keys().collect::<Vec<_>>(), ["GPU-aaaa", "GPU-bbbb"]);
        assert_eq!(map["GPU-bbbb"][0].container, "trainer");
        assert_eq!(map["GPU-aaaa"][0].namespace, "ml");
    }

    #[test]
    fn rejects_truncated_and_compressed_frames() {
        assert!(unframe(&[0, 0, 0]).is_err());
        assert!(unframe(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode_list_response(&[0x0a, 0x05, 0x0a]).is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_an_error_not_a_hang() {
        let err = list(
            Path::new("/nonexistent/kubelet.sock"),
            Duration::from_secs(1),
        )
        .await
        .expect_err("no socket");
        assert!(matches!(err, PodResourcesError::Connect(..)), "{err}");
    }
}
