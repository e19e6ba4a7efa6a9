//! A client of the agent's read-only HTTP API (`/pods`, `/stats/summary`,
//! `/events`), for the tools that watch a node from outside: `top` and
//! `experiment`.
//!
//! Plain HTTP/1.0 over one TCP connection per request: the read-only port
//! speaks nothing else, and a blocking client keeps these tools free of an
//! async runtime (they do one thing at a time, on a timer).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The read-only port of `scripts/kubelab up` and of the agent's default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:10255";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {0:?}: expected http://HOST:PORT (the agent's read-only port)")]
    BadUrl(String),
    #[error("GET {url}: {source} (is the agent running, with --read-only-port?)")]
    Io {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("GET {url}: {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: unexpected response: {detail}")]
    Response { url: String, detail: String },
    #[error("GET {url}: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The agent answered 404: an older agent without this path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status: 404, .. })
    }
}

/// One agent's read-only API, e.g. `http://127.0.0.1:10255`.
#[derive(Debug, Clone)]
pub struct NodeClient {
    host: String,
    port: u16,
    prefix: String,
    timeout: Duration,
}

impl NodeClient {
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(server.to_string());
        let rest = server.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(NodeClient {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            prefix: prefix.to_string(),
            timeout: Duration::from_secs(5),
        })
    }

    pub fn server(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }

    /// `GET path`, the body of a 200 answer.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.server());
        let io_err = |source| ClientError::Io {
            url: url.clone(),
            source,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(io_err)?
            .next()
            .ok_or_else(|| io_err(io::Error::other("no address")))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(io_err)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err)?;
        write!(
            stream,
            "GET {}{path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.prefix, self.host
        )
        .map_err(io_err)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io_err)?;
        let (status, body) = parse_response(&raw).map_err(|detail| ClientError::Response {
            url: url.clone(),
            detail,
        })?;
        if status != 200 {
            return Err(ClientError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(body)
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Json {
            url: format!("{}{path}", self.server()),
            source,
        })
    }

    /// `GET /pods`: the node's pods with their live status.
    pub fn pods(&self) -> Result<Vec<Pod>, ClientError> {
        #[derive(Deserialize)]
        struct PodList {
            #[serde(default)]
            items: Vec<Pod>,
        }
        Ok(self.get_json::<PodList>("/pods")?.items)
    }

    /// `GET /stats/summary`.
    pub fn summary(&self) -> Result<Summary, ClientError> {
        self.get_json("/stats/summary")
    }

    /// `GET /events`: recent events, newest last.
    pub fn events(&self) -> Result<Vec<Event>, ClientError> {
        self.get_json("/events")
    }

    /// The node's CPU count, cAdvisor's `machine_cpu_cores` in `/metrics`
    /// (`None` from an agent that does not report it).
    pub fn machine_cpu_cores(&self) -> Result<Option<u64>, ClientError> {
        let body = self.get("/metrics")?;
        Ok(gauge(&String::from_utf8_lossy(&body), "machine_cpu_cores").map(|v| v as u64))
    }
}

/// An unlabelled sample's value in the Prometheus text format.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Status code and body of an HTTP/1.x response (close-delimited, with a
/// `Content-Length`, or chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

// The Summary API as these tools read it (the agent's `server::stats` writes it).

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStats {
    pub node_name: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStats {
    pub pod_ref: PodRef,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CpuStats {
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
    pub throttling: Option<Throttling>,
    /// Pressure stall information (cgroup v2 nodes).
    pub psi: Option<PsiStats>,
}

/// KEP-4205's PSI of one resource: `some` (a task waited) and `full` (all did).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PsiStats {
    pub some: PsiData,
    pub full: PsiData,
}

/// Averages in percent of wall time; `total` in microseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PsiData {
    pub total: u64,
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Throttling {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_nano_seconds: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MemoryStats {
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub psi: Option<PsiStats>,
}

/// An event as `GET /events` serves it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time: jiff::Timestamp,
    #[serde(rename = "type", alias = "type_")]
    pub type_: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// `namespace/name` of the pod.
    #[serde(default)]
    pub object: String,
    /// `spec.containers{name}` when the event is about one container.
    #[serde(default)]
    pub field_path: Option<String>,
}

impl Event {
    /// The container the event is about, from its field path.
    pub fn container(&self) -> Option<&str> {
        self.field_path
            .as_deref()?
            .strip_prefix("spec.containers{")?
            .strip_suffix('}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlabelled_gauge_is_read_from_metrics_text() {
        let text = "# HELP machine_cpu_cores Number of logical CPU cores.\n\
                    # TYPE machine_cpu_cores gauge\n\
                    machine_cpu_cores_other 9\n\
                    machine_cpu_cores 2\n";
        assert_eq!(gauge(text, "machine_cpu_cores"), Some(2.0));
        assert_eq!(gauge(text, "absent"), None);
    }

    #[test]
    fn server_urls() {
        let c = NodeClient::new("http://127.0.0.1:10255").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("127.0.0.1", 10255, "")
        );
        let c = NodeClient::new("http://node-1:8080/api/").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("node-1", 8080, "/api")
        );
        let c = NodeClient::new("http://[::1]:10255").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 10255));
        assert!(NodeClient::new("https://127.0.0.1:10250").is_err());
        assert!(NodeClient::new("127.0.0.1:10255").is_err());
    }

    #[test]
    fn responses_plain_sized_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.0 200 OK\r\ncontent-type: x\r\n\r\n[1]").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"[1]"[..]));
        let (s, b) =
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoXX").unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"no"[..]));
        let (_, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(b, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn event_container_from_field_path() {
        let e: Event = serde_json::from_str(
            r#"{"time":"2024-01-01T00:00:00Z","type":"Warning","reason":"OOMKilled",
                "message":"m","object":"default/hog-n","fieldPath":"spec.containers{hog}"}"#,
        )
        .unwrap();
        assert_eq!(e.container(), Some("hog"));
        assert_eq!(e.type_, "Warning");
    }
}
