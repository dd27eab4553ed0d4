//! Plain HTTP/1.1 to `tcptrace serve`'s API: a GET over a fresh connection, and a
//! keep-alive client for polling, where a connection per request would cost the
//! daemon a handshake each time. Every read and connect is bounded.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context as _};

/// The longest a connect or a read may take before the request fails.
const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // Requests are one small write each: no waiting for a delayed ACK.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// GET over a fresh connection; the body of a 200 answer.
pub(super) fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// The value of the sample named exactly `sample` (name and labels) in Prometheus text,
/// 0 when absent.
pub(super) fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// One connection reused for request after request; reopened when the server closed
/// it (its idle timeout).
pub(super) struct KeepAlive {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub(super) fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive { addr, stream: None }
    }

    /// GET `path`; the body of a 200 answer. A request on a connection the server had
    /// closed is retried once on a new one.
    pub(super) fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let reused = self.stream.is_some();
        match self.try_get(path) {
            Ok(body) => Ok(body),
            Err(_) if reused => {
                self.stream = None;
                self.try_get(path)
            }
            Err(err) => Err(err),
        }
    }

    fn try_get(&mut self, path: &str) -> anyhow::Result<String> {
        let reader = match &mut self.stream {
            Some(reader) => reader,
            empty => empty.insert(BufReader::new(connect(self.addr)?)),
        };
        let addr = self.addr;
        let result = request(reader, addr, path);
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

fn request(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<String> {
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut status = String::new();
    if reader.read_line(&mut status)? == 0 {
        bail!("the server closed the connection");
    }
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the answer's header ended early");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length.context("an answer without Content-Length")?];
        reader.read_exact(&mut body)?;
        body
    };
    let body = String::from_utf8(body).context("a body that is not UTF-8")?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {} {body}", status.trim_end());
    }
    Ok(body)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .context("a chunk size")?;
        let start = body.len();
        body.resize(start + size + 2, 0);
        reader.read_exact(&mut body[start..])?;
        body.truncate(start + size);
        if size == 0 {
            return Ok(body);
        }
    }
}
