//! The async runtime handed to `webrtc`: tokio's, with larger UDP socket buffers.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer. A data channel on
//! loopback fills that in well under a millisecond, the kernel drops datagrams,
//! and SCTP stalls for a retransmission timeout on each loss (measured: 20–100
//! MB/s with pauses). [`SwitchboardRuntime`] delegates everything to
//! [`TokioRuntime`] but first asks for [`defaults::PEER_UDP_SOCKET_BUFFER`]
//! bytes of send and receive buffer on every socket `webrtc` binds. Where the
//! kernel caps the request (`net.core.rmem_max`) and the process may override
//! it (CAP_NET_ADMIN), the `*BUFFORCE` options are used instead.
//!
//! Every socket is also wrapped in [`AckPacedSocket`], which hands the
//! driver at most `recv_burst` datagrams before it must flush what it has
//! queued — so the receiving SCTP stack acknowledges at least every second
//! packet, as RFC 4960 §6.2 asks. Without it, `webrtc`'s driver drains up to
//! 64 ready datagrams and answers a whole burst with one SACK; a sender that
//! grows its window by at most one packet per SACK and sends a few packets
//! per SACK (aiortc: 4) then crawls at WAN round-trip times (measured: 1 MiB
//! from aiortc in 4.5 s at 40 ms RTT).
//!
//! Connection drivers run on `webrtc`'s own reactor threads
//! (`spawn_reactor`), never on the embedding application's actix threads.

use std::fmt;
use std::future::Future;
use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

use crate::defaults;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// tokio's `webrtc` runtime with enlarged UDP socket buffers and
/// acknowledgement-paced receives.
pub struct SwitchboardRuntime {
    inner: TokioRuntime,
    udp_buffer: usize,
    recv_burst: usize,
}

impl SwitchboardRuntime {
    /// A runtime asking for `udp_buffer` bytes of send and receive buffer per
    /// UDP socket, handing the driver at most [`defaults::PEER_RECV_BURST`]
    /// datagrams between flushes.
    pub fn new(udp_buffer: usize) -> Self {
        SwitchboardRuntime::with_recv_burst(udp_buffer, defaults::PEER_RECV_BURST)
    }

    /// Like [`new`](Self::new), with `recv_burst` datagrams (at least 1)
    /// between flushes; `usize::MAX` leaves `webrtc`'s own batching alone.
    pub fn with_recv_burst(udp_buffer: usize, recv_burst: usize) -> Self {
        SwitchboardRuntime {
            inner: TokioRuntime,
            udp_buffer,
            recv_burst: recv_burst.max(1),
        }
    }
}

impl Default for SwitchboardRuntime {
    fn default() -> Self {
        SwitchboardRuntime::new(defaults::PEER_UDP_SOCKET_BUFFER)
    }
}

impl fmt::Debug for SwitchboardRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwitchboardRuntime")
            .field("udp_buffer", &self.udp_buffer)
            .field("recv_burst", &self.recv_burst)
            .finish()
    }
}

/// A UDP socket that yields to the driver after `limit` datagrams in a row.
///
/// `webrtc`'s driver reads one datagram, then drains more without blocking
/// until a read is not ready, and only then flushes its output (SACKs among
/// it). After `limit` datagrams this socket answers "not ready" once (waking
/// the caller, so a real wait is never lost), which ends the drain: the
/// driver flushes, then reads on. A GRO message counts as the datagrams it
/// holds.
#[derive(Debug)]
pub struct AckPacedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    limit: usize,
    streak: AtomicUsize,
}

impl AckPacedSocket {
    /// Wraps `inner`, yielding after `limit` (at least 1) datagrams in a row.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, limit: usize) -> Self {
        AckPacedSocket {
            inner,
            limit: limit.max(1),
            streak: AtomicUsize::new(0),
        }
    }
}

impl AsyncUdpSocket for AckPacedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let streak = self.streak.load(Ordering::Relaxed);
        if streak >= self.limit {
            self.streak.store(0, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let room = (self.limit - streak).min(bufs.len()).max(1);
        let result = self.inner.poll_recv(cx, &mut bufs[..room], meta);
        match &result {
            Poll::Ready(Ok(messages)) => {
                let datagrams: usize = meta[..*messages]
                    .iter()
                    .map(|m| m.len.div_ceil(m.stride.max(1)).max(1))
                    .sum();
                self.streak.store(streak + datagrams, Ordering::Relaxed);
            }
            Poll::Pending => self.streak.store(0, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// Sets both buffers of `socket` to at least `size` bytes where the system allows it.
///
/// Never fails: a socket with the kernel's default buffers still works, only
/// slower, so a refusal is logged once per socket at debug level.
pub fn enlarge_udp_buffers(socket: &std::net::UdpSocket, size: usize) {
    let sock = SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(size);
    let _ = sock.set_send_buffer_size(size);
    // The kernel doubles the value it stores; half of it is what we asked for.
    let granted = sock.recv_buffer_size().unwrap_or(0) / 2;
    if granted < size {
        force_buffers(socket, size);
    }
    log::debug!(
        "udp socket buffers: asked {size}, receive {} send {}",
        sock.recv_buffer_size().unwrap_or(0) / 2,
        sock.send_buffer_size().unwrap_or(0) / 2
    );
}

/// SO_RCVBUFFORCE / SO_SNDBUFFORCE: past `net.core.rmem_max`, needs CAP_NET_ADMIN.
fn force_buffers(socket: &std::net::UdpSocket, size: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: the fd is a live socket owned by `socket`; the option value is a
        // c_int on the stack whose size is passed alongside it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "udp socket buffer force refused: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl Runtime for SwitchboardRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        enlarge_udp_buffers(&socket, self.udp_buffer);
        let inner = self.inner.wrap_udp_socket(socket)?;
        if self.recv_burst == usize::MAX {
            return Ok(inner);
        }
        Ok(Arc::new(AckPacedSocket::new(inner, self.recv_burst)))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> BoxFuture<'static, ()> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "switchboard-tokio"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_past_the_kernel_default() {
        const ASKED: usize = 4 << 20;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enlarge_udp_buffers(&socket, ASKED);
        let granted = SockRef::from(&socket).recv_buffer_size().unwrap() / 2;
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let expected = if root { ASKED } else { ASKED.min(rmem_max) };
        assert!(
            granted >= expected,
            "granted {granted}, expected {expected}"
        );
    }
}
