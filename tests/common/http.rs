//! A small blocking HTTP/1.1 client for the API tests (no extra dependency: std sockets,
//! `Connection: close`): requests built by hand, answers parsed with their headers.

use std::io::{self, Read, Write};

use serde_json::Value;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What was asked (for failure messages).
    pub what: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn describe(&self) -> String {
        let mut t = String::from_utf8_lossy(&self.body).into_owned();
        if t.len() > 600 {
            t.truncate(600);
            t.push('…');
        }
        format!("{} -> {} {}", self.what, self.status, t)
    }

    /// The body as the API envelope, checked: a JSON object with exactly `statusCode`
    /// (a number equal to the HTTP status), `message` (a non-empty string) and `data` (an
    /// object on success, null on errors), served as application/json.
    pub fn check_envelope(&self) -> Result<Value, String> {
        let fail = |why: &str| Err(format!("{why}: {}", self.describe()));
        let v: Value = match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => return fail(&format!("answer is not JSON ({e})")),
        };
        let Some(obj) = v.as_object() else {
            return fail("envelope is not an object");
        };
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["data", "message", "statusCode"] {
            return fail(&format!("envelope fields are {keys:?}"));
        }
        if !v["statusCode"].is_u64() || v["statusCode"].as_u64() != Some(u64::from(self.status)) {
            return fail("statusCode is not a number equal to the HTTP status");
        }
        match v["message"].as_str() {
            Some(m) if !m.is_empty() => {}
            _ => return fail("message is not a non-empty string"),
        }
        if self.status == 200 && !v["data"].is_object() {
            return fail("data of a success is not an object");
        }
        if self.status != 200 && !v["data"].is_null() {
            return fail("data of an error is not null");
        }
        let ct = self.header("content-type").unwrap_or("");
        if !ct.starts_with("application/json") {
            return fail(&format!("content-type is {ct:?}"));
        }
        self.check_typed_envelope(&v)?;
        Ok(v)
    }

    /// The envelope as the library's generic `Envelope<T>` (errors: `Envelope<NoData>`), checked
    /// to round-trip: the contract's types describe exactly what the daemon sent.
    pub fn check_typed_envelope(&self, v: &Value) -> Result<(), String> {
        let back = if self.status == 200 {
            let e: snapfs::contract::Envelope<Value> =
                serde_json::from_value(v.clone()).map_err(|e| format!("envelope: {e}"))?;
            serde_json::to_value(e)
        } else {
            let e: snapfs::contract::ErrorAnswer =
                serde_json::from_value(v.clone()).map_err(|e| format!("error envelope: {e}"))?;
            serde_json::to_value(e)
        };
        match back {
            Ok(b) if &b == v => Ok(()),
            _ => Err(format!("envelope does not round-trip: {}", self.describe())),
        }
    }

    /// [`Resp::check_envelope`], panicking on a bad one. Returns the whole envelope.
    #[track_caller]
    pub fn envelope(&self) -> Value {
        match self.check_envelope() {
            Ok(v) => v,
            Err(e) => panic!("bad envelope: {e}"),
        }
    }

    /// Asserts a 200 with a valid envelope and returns `data`.
    #[track_caller]
    pub fn data(&self) -> Value {
        assert_eq!(self.status, 200, "expected success: {}", self.describe());
        self.envelope()["data"].clone()
    }

    /// Asserts an error with exactly `status` and a valid envelope.
    #[track_caller]
    pub fn expect_error(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "expected {status}: {}",
            self.describe()
        );
        self.envelope();
        self
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    Unix,
}

/// Authorization header to send over TCP.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Bearer TOKEN` with the daemon's token.
    Good,
    None,
    /// This exact header value.
    Header(String),
}

fn parse_response(raw: &[u8], what: &str, head_request: bool) -> Result<Resp, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "{what}: no complete HTTP head in {} bytes: {:?}",
                raw.len(),
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    // The daemon sends a content-length, except for streams (chunked).
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head_request {
        Vec::new()
    } else if chunked {
        dechunk(rest).ok_or_else(|| format!("{what}: a chunked body that ends early"))?
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if rest.len() < n {
            return Err(format!(
                "{what}: body shorter ({}) than content-length {n}",
                rest.len()
            ));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
        what: what.to_string(),
    })
}

/// The body of a chunked answer; `None` when it lacks its last (empty) chunk.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Sends `req` (a complete HTTP request) on `s` and reads the answer until EOF. A write
/// error (the server may answer and close before reading a large body) is not fatal.
pub fn exchange<S: Read + Write>(mut s: S, req: &[u8], what: &str) -> Result<Resp, String> {
    let head_request = req.starts_with(b"HEAD ");
    let _ = s.write_all(req);
    let _ = s.flush();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A reset after the full answer (unread request body) still counts.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => {
                return Err(format!(
                    "{what}: reading the answer failed after {} bytes: {e}",
                    raw.len()
                ))
            }
        }
    }
    parse_response(&raw, what, head_request)
}

/// Builds an HTTP/1.1 request.
pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub fn enc(seg: &str) -> String {
    let mut out = String::new();
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
