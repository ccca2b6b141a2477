// SPDX-License-Identifier: MIT OR Apache-2.0

//! A hardened vfio-user server loop for one connection.
//!
//! Replaces `vfio_user::Server::run` (0.1.7), whose known problems are: an
//! unknown command or a SET_IRQS with boolean data is answered without
//! draining the message body (the stream desynchronises), backend errors
//! go out with errno 0, and malformed sizes can panic it. Here every
//! message is read whole (header, then exactly `message_size - 16` bytes)
//! before it is interpreted, every field is bounds-checked, errors are
//! answered with a real errno, and a message that cannot be framed ends the
//! connection with a logged error. Message layouts follow the vfio-user
//! specification (header: u16 id, u16 command, u32 size, u32 flags, u32
//! error; all little-endian).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::backend::Backend;
use crate::pci;

/// Header size.
pub const HEADER_SIZE: usize = 16;
/// Largest data transfer the server accepts (and advertises).
pub const MAX_DATA_XFER: usize = 1 << 20;
/// Most file descriptors accepted with one message.
pub const MAX_FDS: usize = 16;

/// Commands.
pub mod cmd {
    /// VERSION.
    pub const VERSION: u16 = 1;
    /// DMA_MAP.
    pub const DMA_MAP: u16 = 2;
    /// DMA_UNMAP.
    pub const DMA_UNMAP: u16 = 3;
    /// DEVICE_GET_INFO.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// DEVICE_GET_REGION_INFO.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// DEVICE_GET_IRQ_INFO.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// DEVICE_SET_IRQS.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// REGION_READ.
    pub const REGION_READ: u16 = 9;
    /// REGION_WRITE.
    pub const REGION_WRITE: u16 = 10;
    /// DEVICE_RESET.
    pub const DEVICE_RESET: u16 = 13;
}

const FLAG_TYPE_MASK: u32 = 0xf;
const FLAG_REPLY: u32 = 1;
const FLAG_NO_REPLY: u32 = 1 << 4;
const FLAG_ERROR: u32 = 1 << 5;

const VFIO_DEVICE_FLAGS_RESET: u32 = 1;
const VFIO_DEVICE_FLAGS_PCI: u32 = 2;

/// Why the connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Socket I/O failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// A message could not be framed.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Message id.
    pub id: u16,
    /// Command.
    pub command: u16,
    /// Total size including the header.
    pub size: u32,
    /// Flags.
    pub flags: u32,
    /// Errno of an error reply.
    pub error: u32,
}

impl Header {
    /// Parses 16 bytes.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Header {
        Header {
            id: u16::from_le_bytes([b[0], b[1]]),
            command: u16::from_le_bytes([b[2], b[3]]),
            size: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            flags: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            error: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Serialises to 16 bytes.
    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }
}

/// Little-endian field reader over a message body.
struct Body<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn new(b: &'a [u8]) -> Self {
        Body { b, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    }

    fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or(&[])
    }
}

/// Outcome of one message.
enum Reply {
    /// Reply payload after the header.
    Ok(Vec<u8>),
    /// Error reply with an errno.
    Err(i32, String),
}

/// Receives the first bytes of a message with any file descriptors.
fn recv_header(stream: &UnixStream, buf: &mut [u8; HEADER_SIZE]) -> io::Result<(usize, Vec<File>)> {
    let mut fds = [0i32; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: `iov` points at `buf`, which is valid for writes of its whole
    // length and outlives the call; `fds` has room for MAX_FDS descriptors.
    let (n, nfds) = unsafe { stream.recv_with_fds(&mut iov, &mut fds) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let files = fds[..nfds.min(MAX_FDS)]
        .iter()
        // SAFETY: recvmsg just gave us these descriptors; nothing else owns them.
        .map(|fd| unsafe { File::from_raw_fd(*fd) })
        .collect();
    Ok((n, files))
}

/// Serves one connection until the client closes it.
///
/// `on_protocol_error` is told about malformed messages (for the report).
///
/// # Errors
///
/// [`ProtocolError`] when the connection ends abnormally.
pub fn serve(
    mut stream: UnixStream,
    backend: &mut Backend,
    on_message: &mut dyn FnMut(),
    on_protocol_error: &mut dyn FnMut(&str),
) -> Result<(), ProtocolError> {
    loop {
        if backend.disconnect_requested() {
            eprintln!("gpu-model: fault injection: closing the connection");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let mut hb = [0u8; HEADER_SIZE];
        let (n, fds) = match recv_header(&stream, &mut hb) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(());
        }
        if n < HEADER_SIZE {
            stream.read_exact(&mut hb[n..]).map_err(|e| {
                ProtocolError::Malformed(format!("connection closed inside a header: {e}"))
            })?;
        }
        let h = Header::parse(&hb);
        // CAST: u32 fits in usize on supported targets.
        let size = h.size as usize;
        if size < HEADER_SIZE {
            let msg = format!("message size {size} is smaller than the header");
            on_protocol_error(&msg);
            return Err(ProtocolError::Malformed(msg));
        }
        let body_len = size - HEADER_SIZE;
        let limit = MAX_DATA_XFER + 4096;
        if body_len > limit {
            // Drain so the stream stays in sync, then refuse.
            io::copy(&mut (&mut stream).take(body_len as u64), &mut io::sink())?;
            let msg = format!("message of {size} bytes exceeds the {limit}-byte limit");
            on_protocol_error(&msg);
            if h.flags & FLAG_NO_REPLY == 0 {
                send_reply(&mut stream, h, Reply::Err(libc::E2BIG, msg))?;
            }
            continue;
        }
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body).map_err(|e| {
            ProtocolError::Malformed(format!("connection closed inside a message body: {e}"))
        })?;
        on_message();
        if h.flags & FLAG_TYPE_MASK != 0 {
            let msg = format!("unexpected reply-type message (command {})", h.command);
            on_protocol_error(&msg);
            continue;
        }
        let reply = handle(h, &body, fds, backend, on_protocol_error);
        if let Reply::Err(errno, msg) = &reply {
            eprintln!(
                "gpu-model: vfio-user command {} failed: {msg} (errno {errno})",
                h.command
            );
        }
        if h.flags & FLAG_NO_REPLY == 0 {
            send_reply(&mut stream, h, reply)?;
        }
    }
}

fn send_reply(stream: &mut UnixStream, req: Header, reply: Reply) -> io::Result<()> {
    let (payload, flags, error) = match reply {
        Reply::Ok(p) => (p, FLAG_REPLY, 0),
        // CAST: errno values are small and positive.
        Reply::Err(e, _) => (Vec::new(), FLAG_REPLY | FLAG_ERROR, e as u32),
    };
    // CAST: replies are at most MAX_DATA_XFER plus a small header.
    let size = (HEADER_SIZE + payload.len()) as u32;
    let h = Header {
        id: req.id,
        command: req.command,
        size,
        flags,
        error,
    };
    let mut buf = Vec::with_capacity(HEADER_SIZE + payload.len());
    buf.extend_from_slice(&h.to_bytes());
    buf.extend_from_slice(&payload);
    stream.write_all(&buf)
}

fn short(what: &str) -> Reply {
    Reply::Err(libc::EINVAL, format!("{what} message too short"))
}

fn backend_err(e: io::Error) -> Reply {
    let errno = e.raw_os_error().unwrap_or(match e.kind() {
        io::ErrorKind::InvalidInput => libc::EINVAL,
        _ => libc::EIO,
    });
    Reply::Err(errno, e.to_string())
}

/// The capabilities the server advertises.
pub fn server_capabilities() -> String {
    format!(
        "{{\"capabilities\":{{\"max_msg_fds\":{MAX_FDS},\"max_data_xfer_size\":{MAX_DATA_XFER},\"migration\":{{\"pgsize\":4096}}}}}}"
    )
}

fn handle(
    h: Header,
    body: &[u8],
    fds: Vec<File>,
    backend: &mut Backend,
    on_protocol_error: &mut dyn FnMut(&str),
) -> Reply {
    let mut b = Body::new(body);
    match h.command {
        cmd::VERSION => {
            let (Some(major), Some(minor)) = (b.u16(), b.u16()) else {
                on_protocol_error("VERSION message too short");
                return short("VERSION");
            };
            let json = b.rest();
            let text = String::from_utf8_lossy(json.strip_suffix(&[0]).unwrap_or(json));
            if !text.trim().is_empty() && serde_json::from_str::<serde_json::Value>(&text).is_err()
            {
                eprintln!("gpu-model: client capabilities are not JSON: {text:?}");
            }
            if major != 0 {
                return Reply::Err(
                    libc::ENOTSUP,
                    format!("client protocol version {major}.{minor}, server speaks 0.x"),
                );
            }
            let mut p = Vec::new();
            p.extend_from_slice(&0u16.to_le_bytes());
            p.extend_from_slice(&0u16.to_le_bytes());
            p.extend_from_slice(server_capabilities().as_bytes());
            p.push(0);
            Reply::Ok(p)
        }
        cmd::DMA_MAP => {
            let (Some(_argsz), Some(flags), Some(offset), Some(address), Some(size)) =
                (b.u32(), b.u32(), b.u64(), b.u64(), b.u64())
            else {
                on_protocol_error("DMA_MAP message too short");
                return short("DMA_MAP");
            };
            if fds.len() > 1 {
                return Reply::Err(libc::EINVAL, "DMA_MAP with more than one fd".into());
            }
            match backend.dma_map(
                DmaMapFlags::from_bits_truncate(flags),
                offset,
                address,
                size,
                fds.into_iter().next(),
            ) {
                Ok(()) => Reply::Ok(Vec::new()),
                Err(e) => backend_err(e),
            }
        }
        cmd::DMA_UNMAP => {
            let (Some(argsz), Some(flags), Some(address), Some(size)) =
                (b.u32(), b.u32(), b.u64(), b.u64())
            else {
                on_protocol_error("DMA_UNMAP message too short");
                return short("DMA_UNMAP");
            };
            match backend.dma_unmap(DmaUnmapFlags::from_bits_truncate(flags), address, size) {
                Ok(()) => {
                    let mut p = Vec::new();
                    p.extend_from_slice(&argsz.to_le_bytes());
                    p.extend_from_slice(&flags.to_le_bytes());
                    p.extend_from_slice(&address.to_le_bytes());
                    p.extend_from_slice(&size.to_le_bytes());
                    Reply::Ok(p)
                }
                Err(e) => backend_err(e),
            }
        }
        cmd::DEVICE_GET_INFO => {
            let mut p = Vec::new();
            p.extend_from_slice(&16u32.to_le_bytes());
            p.extend_from_slice(&(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET).to_le_bytes());
            p.extend_from_slice(&pci::NUM_REGIONS.to_le_bytes());
            p.extend_from_slice(&pci::NUM_IRQS.to_le_bytes());
            Reply::Ok(p)
        }
        cmd::DEVICE_GET_REGION_INFO => {
            let (Some(_argsz), Some(_flags), Some(index)) = (b.u32(), b.u32(), b.u32()) else {
                on_protocol_error("DEVICE_GET_REGION_INFO message too short");
                return short("DEVICE_GET_REGION_INFO");
            };
            let Some(r) = backend.regions().iter().find(|r| r.index == index).copied() else {
                return Reply::Err(libc::EINVAL, format!("no region {index}"));
            };
            let mut p = Vec::new();
            p.extend_from_slice(&32u32.to_le_bytes());
            p.extend_from_slice(&r.flags.to_le_bytes());
            p.extend_from_slice(&r.index.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            p.extend_from_slice(&r.size.to_le_bytes());
            p.extend_from_slice(&0u64.to_le_bytes());
            Reply::Ok(p)
        }
        cmd::DEVICE_GET_IRQ_INFO => {
            let (Some(_argsz), Some(_flags), Some(index)) = (b.u32(), b.u32(), b.u32()) else {
                on_protocol_error("DEVICE_GET_IRQ_INFO message too short");
                return short("DEVICE_GET_IRQ_INFO");
            };
            let Some((flags, count)) = pci::irq_info(index) else {
                return Reply::Err(libc::EINVAL, format!("no IRQ index {index}"));
            };
            let mut p = Vec::new();
            p.extend_from_slice(&16u32.to_le_bytes());
            p.extend_from_slice(&flags.to_le_bytes());
            p.extend_from_slice(&index.to_le_bytes());
            p.extend_from_slice(&count.to_le_bytes());
            Reply::Ok(p)
        }
        cmd::DEVICE_SET_IRQS => {
            let (Some(_argsz), Some(flags), Some(index), Some(start), Some(count)) =
                (b.u32(), b.u32(), b.u32(), b.u32(), b.u32())
            else {
                on_protocol_error("DEVICE_SET_IRQS message too short");
                return short("DEVICE_SET_IRQS");
            };
            if pci::irq_info(index).is_none() {
                return Reply::Err(libc::EINVAL, format!("no IRQ index {index}"));
            }
            // Boolean data (mask/unmask/trigger by value) was drained with
            // the body; the model raises no interrupts, so it is accepted.
            match backend.set_irqs(index, flags, start, count, fds) {
                Ok(()) => Reply::Ok(Vec::new()),
                Err(e) => backend_err(e),
            }
        }
        cmd::REGION_READ => {
            let (Some(offset), Some(region), Some(count)) = (b.u64(), b.u32(), b.u32()) else {
                on_protocol_error("REGION_READ message too short");
                return short("REGION_READ");
            };
            // CAST: u32 fits in usize.
            let count = count as usize;
            if count > MAX_DATA_XFER {
                return Reply::Err(libc::E2BIG, format!("read of {count} bytes"));
            }
            let mut data = vec![0u8; count];
            match backend.region_read(region, offset, &mut data) {
                Ok(()) => {
                    let mut p = Vec::with_capacity(16 + count);
                    p.extend_from_slice(&offset.to_le_bytes());
                    p.extend_from_slice(&region.to_le_bytes());
                    // CAST: count <= MAX_DATA_XFER.
                    p.extend_from_slice(&(count as u32).to_le_bytes());
                    p.extend_from_slice(&data);
                    Reply::Ok(p)
                }
                Err(e) => {
                    on_protocol_error(&format!("REGION_READ: {e}"));
                    backend_err(e)
                }
            }
        }
        cmd::REGION_WRITE => {
            let (Some(offset), Some(region), Some(count)) = (b.u64(), b.u32(), b.u32()) else {
                on_protocol_error("REGION_WRITE message too short");
                return short("REGION_WRITE");
            };
            // CAST: u32 fits in usize.
            let Some(data) = b.take(count as usize) else {
                on_protocol_error("REGION_WRITE data shorter than its count");
                return short("REGION_WRITE");
            };
            match backend.region_write(region, offset, data) {
                Ok(()) => {
                    let mut p = Vec::with_capacity(16);
                    p.extend_from_slice(&offset.to_le_bytes());
                    p.extend_from_slice(&region.to_le_bytes());
                    p.extend_from_slice(&count.to_le_bytes());
                    Reply::Ok(p)
                }
                Err(e) => {
                    on_protocol_error(&format!("REGION_WRITE: {e}"));
                    backend_err(e)
                }
            }
        }
        cmd::DEVICE_RESET => match backend.reset() {
            Ok(()) => Reply::Ok(Vec::new()),
            Err(e) => backend_err(e),
        },
        other => Reply::Err(
            libc::ENOSYS,
            format!("command {other} is not supported by this server"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            id: 7,
            command: 9,
            size: 32,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: 22,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
    }

    #[test]
    fn capabilities_are_json() {
        let v: serde_json::Value = serde_json::from_str(&server_capabilities()).unwrap();
        assert_eq!(v["capabilities"]["max_data_xfer_size"], MAX_DATA_XFER);
    }
}
