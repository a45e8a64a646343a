//! A scriptable HTTP/1.1 origin on 127.0.0.1 port 0: each path has a handler that sees the
//! request (method, headers) and its own request number and returns status, headers and
//! body; every request is counted per path. The conformance tests script the exact headers
//! an RFC rule is about.

use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the origin received.
pub struct Req {
    pub method: String,
    pub path: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// 1 for the first request to this path.
    pub n: usize,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the origin answers.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Raw interim (1xx) responses written before this one, e.g. `"HTTP/1.1 103 ...\r\n\r\n"`.
    pub interim: String,
}

impl Resp {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        Resp {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            interim: String::new(),
        }
    }

    /// The same response preceded by a `103 Early Hints` carrying `link`.
    pub fn after_early_hints(mut self, link: &str) -> Resp {
        self.interim = format!("HTTP/1.1 103 Early Hints\r\nlink: {link}\r\n\r\n");
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;
/// (method, path, headers) of one received request.
type Seen = (String, String, Vec<(String, String)>);

#[derive(Default)]
struct State {
    handlers: Mutex<HashMap<String, Handler>>,
    counts: Mutex<HashMap<String, usize>>,
    /// (method, path, headers) of every request, for tests that check what was forwarded.
    seen: Mutex<Vec<Seen>>,
}

pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, s.clone()));
            }
        });
        Origin {
            addr,
            state,
            accept,
        }
    }

    /// Answer requests for `path` (path and query, exactly) with `f`.
    pub fn on(&self, path: &str, f: impl Fn(&Req) -> Resp + Send + Sync + 'static) {
        self.state
            .handlers
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(f));
    }

    /// Requests received for `path` (any method).
    pub fn count(&self, path: &str) -> usize {
        *self.state.counts.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Methods of the requests received for `path`, in arrival order.
    pub fn methods(&self, path: &str) -> Vec<String> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p == path)
            .map(|(m, _, _)| m.clone())
            .collect()
    }

    /// Headers of the last request received for `path`.
    pub fn last_headers(&self, path: &str) -> Vec<(String, String)> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .unwrap_or_default()
    }
}

async fn serve(mut sock: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 8192];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("/").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let clen: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < clen {
            let mut tmp = [0u8; 8192];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..clen);
        let n = {
            let mut c = state.counts.lock().unwrap();
            let e = c.entry(path.clone()).or_default();
            *e += 1;
            *e
        };
        state
            .seen
            .lock()
            .unwrap()
            .push((method.clone(), path.clone(), headers.clone()));
        let handler = state.handlers.lock().unwrap().get(&path).cloned();
        let req = Req {
            method: method.clone(),
            path,
            headers,
            n,
        };
        let resp = match handler {
            Some(h) => h(&req),
            None => Resp::new(404, &[], "no handler"),
        };
        let mut out = resp.interim.clone();
        out.push_str(&format!("HTTP/1.1 {} X\r\n", resp.status));
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let bodyless = resp.status == 304 || resp.status == 204 || resp.status < 200;
        if !bodyless {
            out.push_str(&format!("content-length: {}\r\n", resp.body.len()));
        }
        out.push_str("\r\n");
        if sock.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if method != "HEAD" && !bodyless && sock.write_all(&resp.body).await.is_err() {
            return;
        }
    }
}

/// The first value of `name` in `headers` (as [`Origin::last_headers`] returns them).
pub fn header_of(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}
