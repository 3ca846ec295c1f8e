//! Runtime and socket helpers both sides of the tunnel use: the tunnel's
//! own tokio runtime, keepalive on agent connections, UDP socket buffers,
//! and passing a FIN on.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::defaults;

/// A runtime for the tunnel: `workers` 1 is single-threaded (fewest
/// thread hand-offs per connection), 0 is one worker per core.
pub fn runtime(workers: usize, name: &str) -> io::Result<tokio::runtime::Runtime> {
    match workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                builder.worker_threads(n);
            }
            builder.enable_all().thread_name(name).build()
        }
    }
}

/// Asks for [`defaults::TUNNEL_UDP_SOCKET_BUFFER`] bytes of send and
/// receive buffer on a UDP service socket (the kernel may give less; a
/// refusal is logged, not fatal).
pub fn enlarge_udp_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    for (what, result) in [
        (
            "receive",
            sock.set_recv_buffer_size(defaults::TUNNEL_UDP_SOCKET_BUFFER),
        ),
        (
            "send",
            sock.set_send_buffer_size(defaults::TUNNEL_UDP_SOCKET_BUFFER),
        ),
    ] {
        if let Err(e) = result {
            log::debug!("tunnel: UDP {what} buffer not enlarged: {e}");
        }
    }
}

/// Sets TCP keepalive and (on Linux) `TCP_USER_TIMEOUT` on an agent
/// connection, relay and agent side alike, so a host that vanishes (power
/// loss, a dropped NAT mapping) is noticed even while nothing is sent, or
/// while sent bytes go unacknowledged (`defaults::TUNNEL_TCP_*`).
pub fn tune_agent_socket(stream: &TcpStream) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_millis(
            defaults::TUNNEL_TCP_KEEPALIVE_IDLE_MS,
        ))
        .with_interval(Duration::from_millis(
            defaults::TUNNEL_TCP_KEEPALIVE_INTERVAL_MS,
        ))
        .with_retries(defaults::TUNNEL_TCP_KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(Duration::from_millis(
        defaults::TUNNEL_TCP_USER_TIMEOUT_MS,
    )))?;
    Ok(())
}

/// Shuts `to`'s write half down (passes a FIN on).
pub fn shutdown_write(to: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write) {
        // The peer is already gone: nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::defaults;

    #[tokio::test]
    async fn agent_sockets_get_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        super::tune_agent_socket(&stream).unwrap();
        let socket = socket2::SockRef::from(&stream);
        let ms = Duration::from_millis;
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            ms(defaults::TUNNEL_TCP_KEEPALIVE_IDLE_MS)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            ms(defaults::TUNNEL_TCP_KEEPALIVE_INTERVAL_MS)
        );
        assert_eq!(
            socket.tcp_keepalive_retries().unwrap(),
            defaults::TUNNEL_TCP_KEEPALIVE_PROBES
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(ms(defaults::TUNNEL_TCP_USER_TIMEOUT_MS))
        );
    }
}
