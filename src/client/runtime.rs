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
//! Connection drivers run on `webrtc`'s own reactor threads
//! (`spawn_reactor`), never on the embedding application's actix threads.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

use crate::defaults;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// tokio's `webrtc` runtime with enlarged UDP socket buffers.
pub struct SwitchboardRuntime {
    inner: TokioRuntime,
    udp_buffer: usize,
}

impl SwitchboardRuntime {
    /// A runtime asking for `udp_buffer` bytes of send and receive buffer per UDP socket.
    pub fn new(udp_buffer: usize) -> Self {
        SwitchboardRuntime {
            inner: TokioRuntime,
            udp_buffer,
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
            .finish()
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
        self.inner.wrap_udp_socket(socket)
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
