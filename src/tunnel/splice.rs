//! Zero-copy forwarding on Linux: `splice(2)` moves bytes socket → pipe →
//! socket inside the kernel, never through a user-space buffer.
//!
//! One direction owns one pipe. It fills the pipe from the source socket
//! when the pipe is empty and drains it into the destination socket, using
//! tokio's readiness (`readable`/`writable` + `try_io`) so it never blocks a
//! runtime thread. EOF on the source shuts the destination's write half
//! down (half-close), exactly like the copying pump, which hands a
//! direction over to [`copy`] once it sees a bulk transfer.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A pipe for one direction.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A non-blocking pipe, enlarged to `size` bytes when the kernel allows
    /// (it keeps its default, 64 KiB, otherwise).
    pub fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let size = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))?;
        Ok(Pipe {
            read,
            write,
            size: usize::try_from(size).unwrap_or(64 * 1024),
        })
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Moves bytes `from` → `to` through `pipe` until EOF (then shuts `to`'s
/// write half down) or an error. Bytes count once they are in the pipe.
pub async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    pipe: Pipe,
    counter: &AtomicU64,
) -> io::Result<()> {
    loop {
        // Fill: the pipe is empty here, so EAGAIN means the socket has nothing.
        let filled = loop {
            from.readable().await?;
            let attempt = from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe.write, None, pipe.size, flags()).map_err(io::Error::from)
            });
            match attempt {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            return super::net::shutdown_write(to);
        }
        counter.fetch_add(filled as u64, Ordering::Relaxed);
        // Drain: the pipe holds `left` bytes, so EAGAIN means the socket is full.
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            let attempt = to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags()).map_err(io::Error::from)
            });
            match attempt {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
