//! The shim's attach socket: clients connect at any time (the agent, for
//! `kubectl attach`), get the container's output from then on, and write
//! its stdin and its terminal's size.
//!
//! It lives in the shim's one poll loop, every descriptor non-blocking: the
//! shim has unshared a PID namespace for the container, after which Linux
//! refuses it threads. A client that does not read loses output beyond a
//! bound rather than stalling the container's log.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::PollFlags;

use super::attach::{self, ATTACH_STDIN, RESIZE, STDERR, STDIN, STDIN_CLOSE, STDOUT};
use crate::logs::LogStream;

/// Output queued for one client beyond which new output is dropped.
const CLIENT_BUFFER: usize = 4 << 20;
/// Stdin queued for the container beyond which clients are not read.
const STDIN_BUFFER: usize = 1 << 20;

struct Client {
    conn: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    attached_stdin: bool,
    gone: bool,
}

/// Which descriptor a poll entry is.
#[derive(Debug, Clone, Copy)]
pub enum Token {
    Listener,
    Stdin,
    Client(usize),
}

pub struct AttachServer {
    listener: UnixListener,
    /// The container's stdin: the pipe's write end, or the terminal.
    stdin: Option<std::fs::File>,
    stdin_pending: Vec<u8>,
    /// The terminal's master end, for resizes.
    terminal: Option<OwnedFd>,
    stdin_once: bool,
    /// `stdin` is a copy of the terminal's master end (not a pipe).
    stdin_is_terminal: bool,
    /// The container's stdin was its terminal and has been closed: the
    /// terminal is hung up (see [`Self::terminal_hung_up`]).
    hung_up: bool,
    clients: Vec<Client>,
    path: PathBuf,
}

fn set_nonblocking(fd: &impl AsRawFd) {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

impl AttachServer {
    /// Listens on `<bundle>/attach`; `None` (said in the shim's log) when
    /// the socket cannot be made: the container runs without attach.
    pub fn start(
        bundle: &Path,
        stdin_pipe: Option<OwnedFd>,
        terminal: Option<&OwnedFd>,
        stdin: bool,
        stdin_once: bool,
    ) -> Option<AttachServer> {
        let stdin_is_terminal = stdin_pipe.is_none() && terminal.is_some() && stdin;
        let stdin = match (stdin_pipe, terminal) {
            (Some(w), _) => Some(std::fs::File::from(w)),
            (None, Some(master)) if stdin => master.try_clone().ok().map(std::fs::File::from),
            _ => None,
        };
        if let Some(f) = &stdin {
            set_nonblocking(f);
        }
        let path = attach::socket_path(bundle);
        let _ = std::fs::remove_file(&path);
        let listener = attach::short_path(bundle)
            .and_then(|(_dir, short)| UnixListener::bind(short))
            .and_then(|l| l.set_nonblocking(true).map(|_| l));
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                eprintln!("attach socket {}: {e}", path.display());
                return None;
            }
        };
        Some(AttachServer {
            listener,
            stdin,
            stdin_pending: Vec::new(),
            terminal: terminal.and_then(|m| m.try_clone().ok()),
            stdin_once,
            stdin_is_terminal,
            hung_up: false,
            clients: Vec::new(),
            path,
        })
    }

    /// The descriptors to poll and what for.
    pub fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut v = vec![(self.listener.as_fd(), PollFlags::POLLIN, Token::Listener)];
        if let Some(f) = &self.stdin
            && !self.stdin_pending.is_empty()
        {
            v.push((f.as_fd(), PollFlags::POLLOUT, Token::Stdin));
        }
        let reading = self.stdin_pending.len() < STDIN_BUFFER;
        for (i, c) in self.clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if reading {
                flags |= PollFlags::POLLIN;
            }
            if !c.outbuf.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            v.push((c.conn.as_fd(), flags, Token::Client(i)));
        }
        v
    }

    /// Acts on what poll reported; call with every ready entry, then
    /// [`Self::sweep`].
    pub fn ready(&mut self, token: Token, revents: PollFlags) {
        match token {
            Token::Listener => {
                while let Ok((conn, _)) = self.listener.accept() {
                    let _ = conn.set_nonblocking(true);
                    self.clients.push(Client {
                        conn,
                        inbuf: Vec::new(),
                        outbuf: Vec::new(),
                        attached_stdin: false,
                        gone: false,
                    });
                }
            }
            Token::Stdin => self.flush_stdin(),
            Token::Client(i) => {
                if revents.contains(PollFlags::POLLOUT) {
                    flush_client(&mut self.clients[i]);
                }
                if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_client(i);
                }
            }
        }
    }

    fn flush_stdin(&mut self) {
        let Some(f) = &mut self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        match f.write(&self.stdin_pending) {
            Ok(n) => {
                self.stdin_pending.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                // The container closed its stdin.
                self.stdin = None;
                self.stdin_pending.clear();
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 32 * 1024];
        let mut gone = false;
        loop {
            match self.clients[i].conn.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => self.clients[i].inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        let inbuf = std::mem::take(&mut self.clients[i].inbuf);
        let mut rest = &inbuf[..];
        while let Some((kind, payload, used)) = split_message(rest) {
            rest = &rest[used..];
            self.handle(i, kind, payload);
        }
        if rest.len() > attach::MAX_MESSAGE + 5 {
            gone = true;
        }
        self.clients[i].inbuf = rest.to_vec();
        if gone {
            // A client that leaves with its stdin attached ends a stdinOnce stdin too.
            if self.clients[i].attached_stdin && self.stdin_once {
                self.close_stdin();
            }
            self.clients[i].attached_stdin = false;
            self.clients[i].gone = true;
        }
    }

    fn handle(&mut self, i: usize, kind: u8, payload: &[u8]) {
        match kind {
            ATTACH_STDIN => self.clients[i].attached_stdin = true,
            STDIN => {
                if self.stdin.is_some() {
                    self.stdin_pending.extend_from_slice(payload);
                    self.flush_stdin();
                }
            }
            STDIN_CLOSE => {
                if self.stdin_once {
                    self.close_stdin();
                }
                self.clients[i].attached_stdin = false;
            }
            RESIZE => {
                if let (Some(master), Some((width, height))) =
                    (&self.terminal, attach::decode_resize(payload))
                {
                    resize(master, width, height);
                }
            }
            _ => {}
        }
    }

    /// Closes the container's stdin once what was written has gone in.
    /// When stdin is the terminal, closing it hangs the terminal up, as
    /// containerd's shim closes a task's console when its stdin closes: a
    /// pty's reader never sees an end of input otherwise, so an interactive
    /// `sh` left by its only attached client would wait for ever.
    fn close_stdin(&mut self) {
        let Some(mut f) = self.stdin.take() else {
            return;
        };
        if !self.stdin_pending.is_empty() {
            // SAFETY: clearing O_NONBLOCK so the rest goes in before the close.
            unsafe {
                let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
            let _ = f.write_all(&self.stdin_pending);
        }
        self.stdin_pending.clear();
        if self.stdin_is_terminal {
            self.terminal = None;
            self.hung_up = true;
        }
    }

    /// Whether the terminal was hung up: the shim closes its own master end
    /// too, the last one, so the container's session gets SIGHUP and its
    /// reads of the terminal end.
    pub fn terminal_hung_up(&self) -> bool {
        self.hung_up
    }

    /// Drops clients that have gone.
    pub fn sweep(&mut self) {
        self.clients.retain(|c| !c.gone);
    }

    /// Hands container output to every attached client.
    pub fn broadcast(&mut self, stream: LogStream, data: &[u8]) {
        let kind = match stream {
            LogStream::Stdout => STDOUT,
            LogStream::Stderr => STDERR,
        };
        let msg = attach::encode(kind, data);
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            if c.outbuf.len() + msg.len() <= CLIENT_BUFFER {
                c.outbuf.extend_from_slice(&msg);
                flush_client(c);
            }
        }
    }

    /// The container has ended: clients get the rest of its output and the
    /// end of it, and nobody attaches any more.
    pub fn finish(&mut self) {
        for c in &mut self.clients {
            let _ = c.conn.set_nonblocking(false);
            let _ = c
                .conn
                .set_write_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = c.conn.write_all(&c.outbuf);
            let _ = c.conn.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn flush_client(c: &mut Client) {
    while !c.outbuf.is_empty() {
        match c.conn.write(&c.outbuf) {
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.outbuf.clear();
                c.gone = true;
                return;
            }
        }
    }
}

/// One whole message at the start of `buf`: kind, payload, bytes used.
fn split_message(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > attach::MAX_MESSAGE || buf.len() < 5 + len {
        return None;
    }
    Some((buf[0], &buf[5..5 + len], 5 + len))
}

pub fn resize(terminal: &OwnedFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer; the fd is a pty master.
    unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_only_when_whole() {
        let mut wire = attach::encode(STDIN, b"abc");
        wire.extend(attach::encode(STDIN_CLOSE, b""));
        let (kind, payload, used) = split_message(&wire).unwrap();
        assert_eq!((kind, payload), (STDIN, &b"abc"[..]));
        let (kind, _, _) = split_message(&wire[used..]).unwrap();
        assert_eq!(kind, STDIN_CLOSE);
        assert_eq!(split_message(&wire[..6]), None);
    }
}
