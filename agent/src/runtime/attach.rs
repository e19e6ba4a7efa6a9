//! The attach socket of a container (`<bundle>/attach`), served by its shim
//! as conmon serves one: a client gets the container's output from the
//! moment it connects and may write to its stdin and resize its terminal.
//!
//! Every message either way is `[kind: u8][length: u32 BE][payload]`.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Client → shim: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Client → shim: this client's stdin has ended (with `stdinOnce`, the
/// container's does too).
pub const STDIN_CLOSE: u8 = 1;
/// Client → shim: the terminal's new size, width and height (u16 BE each).
pub const RESIZE: u8 = 2;
/// Client → shim: this client attaches its stdin (sent first).
pub const ATTACH_STDIN: u8 = 3;
/// Shim → client: container output.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Larger messages are refused.
pub const MAX_MESSAGE: usize = 1 << 20;

pub fn socket_path(bundle: &Path) -> PathBuf {
    bundle.join("attach")
}

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 5);
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn encode_resize(width: u16, height: u16) -> Vec<u8> {
    let mut p = width.to_be_bytes().to_vec();
    p.extend_from_slice(&height.to_be_bytes());
    encode(RESIZE, &p)
}

pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let p: [u8; 4] = payload.try_into().ok()?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// One message from a blocking reader; `None` at the end or on garbage.
pub fn read_message(r: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE {
        return None;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).ok()?;
    Some((head[0], payload))
}

/// A unix socket path usable whatever the bundle path's length (a socket
/// path has at most 107 bytes): the bundle dir through a descriptor of it.
/// Keep the returned file open while the path is used.
pub fn short_path(bundle: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(bundle)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/attach", dir.as_raw_fd()));
    Ok((dir, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_resizes_round_trip() {
        let mut wire = encode(STDIN, b"ls\n");
        wire.extend(encode_resize(120, 40));
        wire.extend(encode(STDIN_CLOSE, b""));
        let mut r = &wire[..];
        assert_eq!(read_message(&mut r), Some((STDIN, b"ls\n".to_vec())));
        let (kind, p) = read_message(&mut r).unwrap();
        assert_eq!((kind, decode_resize(&p)), (RESIZE, Some((120, 40))));
        assert_eq!(read_message(&mut r), Some((STDIN_CLOSE, vec![])));
        assert_eq!(read_message(&mut r), None);
        assert_eq!(decode_resize(b"abc"), None);
    }
}
