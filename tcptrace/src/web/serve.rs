//! The guarded HTTP server: axum's router behind hyper's HTTP/1.1 connection, each
//! accepted stream under a watchdog, optionally inside TLS.
//!
//! What an unfriendly or broken client can hold, and for how long:
//! - at most `max_connections` connections. At the cap, a new connection closes the one
//!   that has waited longest for a request: a silent one (idle keep-alive, or nothing
//!   sent yet) first, else one still sending its request's header or TLS handshake; so
//!   idle or trickling clients cannot lock out a scrape. A connection being answered is
//!   never closed for another. When every connection is being answered, the new one waits for the first
//!   to finish and the kernel's backlog holds the rest.
//! - an idle connection (before its first request or between two) for `idle_timeout`;
//! - a request's header, from its first byte (or a TLS handshake), for
//!   `read_header_timeout`; at most [`MAX_HEADER_BYTES`] of it;
//! - a request, from its header to its response's last byte, for [`RESPONSE_DEADLINE`]
//!   (the handlers have their own 10 s timeout); a response write that makes no
//!   progress for [`WRITE_STALL`] ends the connection;
//! - no request body: these are GET routes; more than [`MAX_BODY_BYTES`] is refused
//!   with 413 before anything reads it.

use std::{
    convert::Infallible,
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{header, HeaderValue, Request, Response, StatusCode},
    Router,
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore},
};
use tower_service::Service as _;

use super::WebConfig;
use crate::metrics::Metrics;

/// A request header larger than this is answered 431 (hyper's read buffer; its minimum
/// is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in a request.
pub const MAX_HEADERS: usize = 64;
/// A request that declares a larger body is answered 413. The routes read none.
pub const MAX_BODY_BYTES: u64 = 1024;
/// A request, from its header to its response's last byte, is cut after this.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(60);
/// A write that makes no progress for this long (a client that stopped reading) ends
/// its connection.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// At the cap with every connection busy: how often to look again for one gone idle.
const EVICT_RETRY: Duration = Duration::from_millis(100);
/// How long basic auth may take (bcrypt runs one at a time) before the request is
/// answered 503.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "cap reached" warning in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The server's guard limits (`--web.*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a connection is doing, for its deadline and for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request (or a TLS handshake) to begin.
    Idle,
    /// Bytes have come: a request header or a TLS handshake is being read.
    Header,
    /// A request is being answered, until its response's last byte.
    Request,
}

#[derive(Debug)]
struct SlotState {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// When the connection last stopped being answered (or was accepted): the one with
    /// the oldest goes first at the cap.
    idle_since: Instant,
    evicted: bool,
}

/// One connection's state, shared by its task, its I/O, its requests and the accept loop.
struct Slot {
    id: u64,
    peer: SocketAddr,
    state: Mutex<SlotState>,
    /// Woken on every phase change and eviction; the watchdog recomputes its deadline.
    changed: Notify,
}

/// Why a connection was closed by the server before the client was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    IdleTimeout,
    HeaderTimeout,
    ResponseDeadline,
    Evicted,
}

impl Cut {
    /// The `reason` label of `tcptrace_http_connections_cut_total`.
    fn label(self) -> &'static str {
        match self {
            Cut::IdleTimeout => "idle_timeout",
            Cut::HeaderTimeout => "header_timeout",
            Cut::ResponseDeadline => "response_deadline",
            Cut::Evicted => "evicted",
        }
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self, phase: Phase) {
        let mut state = self.lock();
        let now = Instant::now();
        if state.phase == Phase::Request && phase != Phase::Request {
            state.idle_since = now;
        }
        state.phase = phase;
        state.since = now;
        drop(state);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts reading a header.
    fn bytes_in(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Idle {
            state.phase = Phase::Header;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Resolves when the connection must be cut. The deadline is read afresh from the
    /// phase and its start each time round, so a phase that changed (and changed back)
    /// while waiting is judged by its own start, never by the one waited for.
    async fn cut(&self, limits: &Limits) -> Cut {
        loop {
            let notified = self.changed.notified();
            let (deadline, why) = {
                let state = self.lock();
                if state.evicted {
                    return Cut::Evicted;
                }
                match state.phase {
                    Phase::Idle => (state.since + limits.idle_timeout, Cut::IdleTimeout),
                    Phase::Header => (state.since + limits.read_header_timeout, Cut::HeaderTimeout),
                    Phase::Request => (state.since + RESPONSE_DEADLINE, Cut::ResponseDeadline),
                }
            };
            if Instant::now() >= deadline {
                return why;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

/// The open connections.
#[derive(Default)]
struct Slots {
    open: Mutex<Vec<Arc<Slot>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, peer: SocketAddr) -> Arc<Slot> {
        let now = Instant::now();
        let slot = Arc::new(Slot {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            peer,
            state: Mutex::new(SlotState {
                phase: Phase::Idle,
                since: now,
                idle_since: now,
                evicted: false,
            }),
            changed: Notify::new(),
        });
        self.lock().push(Arc::clone(&slot));
        slot
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }

    /// Closes the connection that has waited longest for a request, a silent one
    /// before one that is sending a header or a TLS handshake; false if every
    /// connection is being answered.
    fn evict_longest_idle(&self) -> bool {
        let open = self.lock();
        let victim = open
            .iter()
            .filter_map(|slot| {
                let state = slot.lock();
                (state.phase != Phase::Request && !state.evicted)
                    .then_some(((state.phase == Phase::Header, state.idle_since), slot))
            })
            .min_by_key(|(order, _)| *order);
        let Some((_, slot)) = victim else {
            return false;
        };
        slot.lock().evicted = true;
        slot.changed.notify_one();
        true
    }
}

/// Removes its slot when the connection's task ends, however it ends.
struct Registered {
    slots: Arc<Slots>,
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.slots.remove(self.id);
        self.metrics.http_connections.dec();
    }
}

/// A request being answered: the connection is in [`Phase::Request`] until this is
/// dropped with the response body (after its last byte was handed to hyper).
struct Answering(Arc<Slot>);

impl Answering {
    fn start(slot: Arc<Slot>) -> Answering {
        slot.enter(Phase::Request);
        Answering(slot)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.enter(Phase::Idle);
    }
}

/// A response body that keeps its request's [`Answering`] alive.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream as the watchdog sees it: reads move an idle connection to
/// [`Phase::Header`]; a write that makes no progress for [`WRITE_STALL`] fails.
struct GuardedIo {
    stream: TcpStream,
    slot: Arc<Slot>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GuardedIo {
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.bytes_in();
        }
        poll
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_progress(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.write_progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.write_progress(cx, poll)
    }
}

/// What every connection shares.
struct Shared {
    router: Router,
    web: WebConfig,
    limits: Limits,
    slots: Arc<Slots>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn cut(&self, reason: &str) {
        self.metrics
            .http_connections_cut
            .with_label_values(&[reason])
            .inc();
    }

    fn refused(&self, reason: &str) {
        self.metrics
            .http_requests_refused
            .with_label_values(&[reason])
            .inc();
    }
}

/// Serves `router` on `listener` until `stop` fires, then lets requests in progress
/// finish (idle connections close at once) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: WebConfig,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let cap = limits.max_connections.max(1);
    metrics.http_connections_limit.set(i64::from(cap));
    let shared = Arc::new(Shared {
        router,
        web,
        limits,
        slots: Arc::default(),
        metrics,
    });
    let permits = Arc::new(Semaphore::new(cap as usize));
    let (shutdown, shutting_down) = watch::channel(false);
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: the client is gone or the process is out of
                    // descriptors; neither is the server's end.
                    log::debug!("accepting an HTTP connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    log::warn!(
                        "{cap} HTTP connections open (--web.max-connections): closing the \
                         longest idle for each new one"
                    );
                }
                // Every connection may be mid-answer now; one that goes back to idle
                // keeps its permit, so evict again until a permit frees.
                let mut permit = None;
                while permit.is_none() {
                    shared.slots.evict_longest_idle();
                    tokio::select! {
                        _ = &mut stop => break,
                        acquired = Arc::clone(&permits).acquire_owned() => {
                            permit = acquired.ok();
                        }
                        () = tokio::time::sleep(EVICT_RETRY) => {}
                    }
                }
                match permit {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = shared.slots.add(peer);
        tokio::spawn(connection(
            stream,
            slot,
            Arc::clone(&shared),
            permit,
            shutting_down.clone(),
        ));
    }
    // New connections are refused from here; open ones finish what they are answering.
    drop(listener);
    let _ = shutdown.send(true);
    let _ = permits.acquire_many(cap).await;
    Ok(())
}

/// The answer to a plain HTTP request on the TLS port (as Go's server gives).
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; \
    charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

async fn connection(
    stream: TcpStream,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    mut shutting_down: watch::Receiver<bool>,
) {
    shared.metrics.http_connections.inc();
    let _registered = Registered {
        slots: Arc::clone(&shared.slots),
        metrics: Arc::clone(&shared.metrics),
        id: slot.id,
    };
    let limits = shared.limits;
    let io = GuardedIo {
        stream,
        slot: Arc::clone(&slot),
        stalled: None,
    };
    let Some(tls) = shared.web.tls.clone() else {
        return http(TokioIo::new(io), &slot, &shared, &mut shutting_down).await;
    };
    let handshake = async {
        // A TLS client speaks first with a handshake record (0x16); a letter is an
        // HTTP request line.
        let mut first = [0u8; 1];
        match io.stream.peek(&mut first).await {
            Ok(1) if first[0].is_ascii_uppercase() => {
                use tokio::io::AsyncWriteExt as _;
                let mut io = io;
                let _ = io.write_all(PLAIN_HTTP_ON_TLS).await;
                let _ = io.shutdown().await;
                shared.cut("plain_http_on_tls");
                return None;
            }
            Ok(1) => {}
            _ => return None,
        }
        match tokio_rustls::TlsAcceptor::from(tls).accept(io).await {
            Ok(stream) => Some(stream),
            Err(err) => {
                log::debug!("TLS handshake with {} failed: {err}", slot.peer);
                shared.cut("tls_handshake_failed");
                None
            }
        }
    };
    let stream = tokio::select! {
        stream = handshake => stream,
        why = slot.cut(&limits) => {
            log::debug!("HTTP connection from {} closed during the TLS handshake: {why:?}", slot.peer);
            shared.cut(why.label());
            None
        }
        _ = shutting_down.changed() => None,
    };
    let Some(stream) = stream else { return };
    // The handshake is done: now waiting for the first request.
    slot.enter(Phase::Idle);
    http(TokioIo::new(stream), &slot, &shared, &mut shutting_down).await;
}

/// HTTP/1.1 on an accepted (and maybe decrypted) stream, under the watchdog.
async fn http<I>(
    io: I,
    slot: &Arc<Slot>,
    shared: &Arc<Shared>,
    shutting_down: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = {
        let shared = Arc::clone(shared);
        let slot = Arc::clone(slot);
        service_fn(move |request: Request<Incoming>| {
            let answering = Answering::start(Arc::clone(&slot));
            let shared = Arc::clone(&shared);
            async move {
                let mut response = respond(request, &shared).await;
                for (name, value) in &shared.web.headers {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _answering: answering,
                    })
                }))
            }
        })
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        // The watchdog times headers (and idle time); hyper's own timer is not set.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *shutting_down.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    log::debug!("HTTP connection from {}: {err}", slot.peer);
                }
                return;
            }
            why = slot.cut(&shared.limits) => {
                log::debug!("HTTP connection from {} closed: {why:?}", slot.peer);
                shared.cut(why.label());
                return;
            }
            changed = shutting_down.changed(), if !stopping => {
                stopping = true;
                let _ = changed;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Rate limit, size, authentication, then the router.
async fn respond(request: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let web = &shared.web;
    if let Some(limit) = &web.rate_limit {
        if !limit.allow() {
            shared.refused("rate_limited");
            return plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n");
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if chunked || declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        shared.refused("body_too_large");
        let mut response = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted here\n",
        );
        // The unread body must not be taken for the next request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    if let Some(auth) = &web.auth {
        let path = request.uri().path();
        if !web.auth_excluded_paths.iter().any(|p| p == path) {
            let header = request.headers().get(header::AUTHORIZATION);
            match tokio::time::timeout(AUTH_TIMEOUT, auth.allows(header)).await {
                Ok(true) => {}
                Ok(false) => {
                    shared.refused("unauthorized");
                    let mut response = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"tcptrace\""),
                    );
                    return response;
                }
                Err(_) => {
                    shared.refused("auth_busy");
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many password checks at once; try again\n",
                    );
                }
            }
        }
    }
    match shared.router.clone().call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
