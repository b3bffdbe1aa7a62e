//! The proxy's own CancelRequests (`query_timeout`): when a session asks
//! (`Action::SendCancel`), the worker opens a non-blocking connection to
//! the upstream server, registered under the client connection's cancel
//! token (`token::encode_cancel`), and drives the session's
//! `conn::cancel::CancelCall` on it: connect, SSLRequest and TLS as
//! `upstream_tls` says, the request, then the server's close. The socket
//! lives in the client's `Conn` and dies with it; its end is reported to the
//! session (`Session::handle_cancel_done`), whose `QueryCancel` timer bounds
//! the whole call (connect included), so the socket needs no timer here.

use mio::net::TcpStream;
use mio::{Interest, Registry};

use super::{Conn, Worker, connect_result};
use crate::conn::cancel::{CallEnd, CancelCall};
use crate::reactor::WorkerSettings;
use crate::reactor::token;
use crate::reactor::transport::{Io, Ready, Transport};
use crate::{debug, info};

/// Passes over a cancel socket per drive (a handful of small steps).
const CANCEL_BUDGET: usize = 8;

/// A cancel connection in flight.
pub(super) struct CancelSock {
    call: Box<CancelCall>,
    transport: Transport,
    pub(super) ready: Ready,
    connecting: bool,
    tls_pending: bool,
    addr_idx: usize,
}

/// Opens the connection for `call` (first upstream address that accepts a
/// connect attempt). A call that cannot even start is reported at once.
pub(super) fn start(
    conn: &mut Conn,
    registry: &Registry,
    settings: &WorkerSettings,
    call: Box<CancelCall>,
    slot: usize,
    generation: u64,
    now: std::time::Instant,
) {
    if let Some(mut old) = conn.cancel.take() {
        // One at a time per session (it asks for another only after the
        // first was reported); never two sockets under one token.
        close(&mut old, registry);
    }
    match connect(registry, &settings.upstream, 0, slot, generation) {
        Ok((transport, idx)) => {
            debug!("query_cancel_connecting", conn = conn.id);
            conn.cancel = Some(Box::new(CancelSock {
                call,
                transport,
                ready: Ready::default(),
                connecting: true,
                tls_pending: false,
                addr_idx: idx,
            }));
        }
        Err(e) => {
            info!("query_cancel_failed", conn = conn.id, error = e);
            conn.session.handle_cancel_done(now);
        }
    }
}

fn connect(
    registry: &Registry,
    upstream: &[std::net::SocketAddr],
    from: usize,
    slot: usize,
    generation: u64,
) -> Result<(Transport, usize), String> {
    let mut last = "no upstream address".to_string();
    for (idx, addr) in upstream.iter().enumerate().skip(from) {
        match TcpStream::connect(*addr) {
            Ok(mut stream) => {
                match registry.register(
                    &mut stream,
                    token::encode_cancel(slot, generation),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => return Ok((Transport::plain(stream), idx)),
                    Err(e) => last = format!("register: {e}"),
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn close(c: &mut CancelSock, registry: &Registry) {
    let _ = registry.deregister(c.transport.stream_mut());
}

impl Worker {
    /// Readiness of client connection (`slot`, `generation`)'s cancel socket.
    pub(super) fn cancel_event(&mut self, slot: usize, generation: u64, ev: &mio::event::Event) {
        let Some(conn) = self.slab.get_mut(slot, generation) else {
            return;
        };
        let Some(c) = conn.cancel.as_mut() else {
            return;
        };
        let closed = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
        c.ready.read |= ev.is_readable() || closed;
        c.ready.hup |= closed;
        c.ready.write |= ev.is_writable() || closed;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push((slot, generation));
        }
    }
}

/// Deregisters the cancel socket of a connection that is being freed.
pub(super) fn drop_socket(conn: &mut Conn, registry: &Registry) {
    if let Some(mut c) = conn.cancel.take() {
        close(&mut c, registry);
    }
}

/// Drives the connection's cancel socket, if any; true when something moved.
pub(super) fn drive(
    conn: &mut Conn,
    registry: &Registry,
    settings: &WorkerSettings,
    slot: usize,
    generation: u64,
    now: std::time::Instant,
) -> bool {
    let Some(c) = conn.cancel.as_mut() else {
        return false;
    };
    let mut progress = false;
    for _ in 0..CANCEL_BUDGET {
        if c.call.ended().is_some() {
            break;
        }
        let mut moved = false;
        if c.connecting && c.ready.write {
            match connect_result(&c.transport) {
                Ok(true) => {
                    c.connecting = false;
                    let _ = c.transport.stream().set_nodelay(true);
                    c.call.handle_connected();
                    moved = true;
                }
                Ok(false) => c.ready.write = false,
                Err(_) => {
                    let _ = registry.deregister(c.transport.stream_mut());
                    match connect(
                        registry,
                        &settings.upstream,
                        c.addr_idx + 1,
                        slot,
                        generation,
                    ) {
                        Ok((t, idx)) => {
                            c.transport = t;
                            c.ready = Ready::default();
                            c.addr_idx = idx;
                        }
                        Err(_) => c
                            .call
                            .handle_failed("cannot connect to the upstream server"),
                    }
                    moved = true;
                }
            }
        }
        if c.connecting {
            progress |= moved;
            break;
        }
        if c.call.take_start_tls() {
            match super::upgrade_upstream(&mut c.transport, settings) {
                Ok(()) => c.tls_pending = true,
                Err(e) => {
                    debug!("cancel_tls_failed", error = e);
                    c.call
                        .handle_failed("TLS with the upstream server failed to start");
                }
            }
            moved = true;
        }
        // TLS records (handshake, alerts) out; the handshake's reads.
        if c.ready.write && c.transport.wants_flush() {
            if let Io::Failed(_) = c.transport.flush(&mut c.ready) {
                c.call.handle_failed("write to the upstream server failed");
            }
            moved = true;
        }
        if c.tls_pending && c.ready.read && c.transport.handshaking() {
            let mut none = [0u8; 0];
            match c.transport.read(&mut none, &mut c.ready) {
                Io::Eof => c.call.handle_eof(),
                Io::Failed(_) => c
                    .call
                    .handle_failed("TLS handshake with the upstream server failed"),
                _ => {}
            }
            moved = true;
        }
        if c.tls_pending && !c.transport.handshaking() {
            c.tls_pending = false;
            c.call.handle_tls_ready();
            moved = true;
        }
        if !c.tls_pending && c.ready.write && !c.call.output().is_empty() {
            match c.transport.write(c.call.output(), &[], &mut c.ready) {
                Io::Progress(n) => {
                    c.call.handle_written(n);
                    moved = true;
                }
                Io::WouldBlock => {}
                Io::Eof | Io::Failed(_) => {
                    c.call.handle_failed("write to the upstream server failed");
                    moved = true;
                }
            }
        }
        let want = c.call.read_len();
        if !c.tls_pending && c.ready.read && want > 0 {
            let mut buf = [0u8; 16];
            let buf = buf.get_mut(..want).unwrap_or(&mut []);
            match c.transport.read(buf, &mut c.ready) {
                Io::Progress(n) => {
                    c.call.handle_read(buf.get(..n).unwrap_or(&[]));
                    moved = true;
                }
                Io::WouldBlock => {}
                Io::Eof => {
                    c.call.handle_eof();
                    moved = true;
                }
                Io::Failed(_) => {
                    c.call.handle_failed("read from the upstream server failed");
                    moved = true;
                }
            }
        }
        progress |= moved;
        if !moved {
            break;
        }
    }
    if let Some(end) = c.call.ended() {
        match end {
            CallEnd::Delivered => debug!("query_cancel_delivered", conn = conn.id),
            CallEnd::Failed(why) => info!("query_cancel_failed", conn = conn.id, error = why),
        }
        if let Some(mut c) = conn.cancel.take() {
            close(&mut c, registry);
        }
        conn.session.handle_cancel_done(now);
        progress = true;
    }
    progress
}
