//! Reading a CRI log file the way `kubectl logs` shows it: payloads only
//! (or prefixed with their time), `P` pieces joined into their line, the
//! last N lines, and with `follow` the file as it grows and rotates until the
//! container is gone.

use std::future::Future;
use std::io::{self, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{LogStream, format_timestamp};

/// `kubectl logs` options (kubelet's `PodLogOptions`, as far as they concern
/// one file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading as the file grows, across rotations, until the
    /// container is gone (see [`read_container_log`]).
    pub follow: bool,
    /// Start this many lines before the end of the live file (rotated files
    /// are not read, as with kubelet).
    pub tail_lines: Option<usize>,
    /// Prefix every line with its RFC3339Nano time and a space.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<usize>,
    /// Skip lines logged before this time.
    pub since_time: Option<jiff::Timestamp>,
}

/// How long a follower sleeps when nothing tells it the file changed:
/// a safety net under inotify, the only clock without it.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
const POLL_WITHOUT_INOTIFY: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 32 * 1024;

/// The log at `path` as `kubectl logs` shows it, as a stream of byte chunks
/// (each holding whole lines, except when a `P` piece is passed through as
/// it arrives or `limit_bytes` cuts it).
///
/// Without `follow` the stream ends at the end of the file. With `follow` it
/// waits for more (inotify on the log's directory, with a 1 s safety poll),
/// moves on to the new file when the writer rotates, and ends once
/// `container_gone` resolves *and* everything written up to then has been
/// read: resolve it when the container has exited and its shim has closed
/// the log (e.g. `token.cancelled_owned()` of a
/// `tokio_util::sync::CancellationToken`, or a `oneshot::Receiver` mapped to
/// `()`). A client that hangs up simply drops the stream; to follow until
/// then, pass `std::future::pending()`. `container_gone` is ignored without
/// `follow`.
///
/// A missing or unreadable file is one `Err` item, then the end.
pub fn read_container_log(
    path: &Path,
    opts: LogOptions,
    container_gone: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let reader = LogReader::new(path.to_owned(), opts, Box::pin(container_gone));
    futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_chunk().await?;
        Some((item, reader))
    })
}

/// One parsed record: `<timestamp> <stream> <tag> <content>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriRecord<'a> {
    pub timestamp: &'a str,
    pub stream: LogStream,
    /// `P`: more of this line follows in the next record of the stream.
    pub partial: bool,
    pub content: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CRI log record: {0}")]
pub struct CriParseError(&'static str);

/// Parse one record (without its newline). Tags may carry more fields after
/// a `:` (`F:x`), as the CRI allows; only the first is used.
pub fn parse_cri_record(line: &[u8]) -> Result<CriRecord<'_>, CriParseError> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let timestamp = fields
        .next()
        .filter(|t| !t.is_empty())
        .ok_or(CriParseError("missing timestamp"))?;
    let timestamp =
        std::str::from_utf8(timestamp).map_err(|_| CriParseError("timestamp is not text"))?;
    let stream = match fields.next() {
        Some(b"stdout") => LogStream::Stdout,
        Some(b"stderr") => LogStream::Stderr,
        _ => return Err(CriParseError("stream is not stdout or stderr")),
    };
    let tag = fields.next().ok_or(CriParseError("missing tag"))?;
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(CriParseError("tag is not P or F")),
    };
    Ok(CriRecord {
        timestamp,
        stream,
        partial,
        content: fields.next().unwrap_or_default(),
    })
}

/// Turns records into output lines.
#[derive(Debug)]
struct LineAssembler {
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    /// With timestamps, `P` pieces wait for their `F` (per stream, since
    /// stdout and stderr interleave) so a line gets one prefix: the time of
    /// its first piece.
    pending: [Option<(String, Vec<u8>)>; 2],
}

impl LineAssembler {
    fn new(opts: &LogOptions) -> Self {
        Self {
            timestamps: opts.timestamps,
            since: opts.since_time,
            pending: [None, None],
        }
    }

    fn push(&mut self, rec: CriRecord<'_>, out: &mut Vec<u8>) {
        let time = (self.timestamps || self.since.is_some())
            .then(|| rec.timestamp.parse::<jiff::Timestamp>().ok())
            .flatten();
        if let (Some(since), Some(time)) = (self.since, time)
            && time < since
        {
            return;
        }
        if !self.timestamps {
            // Pieces pass straight through: concatenated they are the line.
            out.extend_from_slice(rec.content);
            if !rec.partial {
                out.push(b'\n');
            }
            return;
        }
        let slot = &mut self.pending[rec.stream as usize];
        let (stamp, mut line) = slot.take().unwrap_or_else(|| {
            (
                time.map(format_timestamp)
                    .unwrap_or_else(|| rec.timestamp.to_owned()),
                Vec::new(),
            )
        });
        line.extend_from_slice(rec.content);
        if rec.partial {
            *slot = Some((stamp, line));
        } else {
            Self::write_line(out, &stamp, &line, true);
        }
    }

    /// The end: pieces still waiting for their `F` are shown as they are.
    fn finish(&mut self, out: &mut Vec<u8>) {
        for slot in &mut self.pending {
            if let Some((stamp, line)) = slot.take() {
                Self::write_line(out, &stamp, &line, false);
            }
        }
    }

    fn write_line(out: &mut Vec<u8>, stamp: &str, line: &[u8], newline: bool) {
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(line);
        if newline {
            out.push(b'\n');
        }
    }
}

type GoneFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct LogReader {
    path: PathBuf,
    opts: LogOptions,
    file: Option<tokio::fs::File>,
    /// (dev, inode) of `file`: a different one at `path` means rotation.
    identity: (u64, u64),
    pos: u64,
    /// Read but not yet a complete line.
    buf: Vec<u8>,
    lines: LineAssembler,
    remaining: Option<usize>,
    gone: Option<GoneFuture>,
    container_gone: bool,
    wake: Option<FileChanges>,
    done: bool,
}

impl LogReader {
    fn new(path: PathBuf, opts: LogOptions, gone: GoneFuture) -> Self {
        Self {
            lines: LineAssembler::new(&opts),
            remaining: opts.limit_bytes,
            path,
            opts,
            file: None,
            identity: (0, 0),
            pos: 0,
            buf: Vec::new(),
            gone: Some(gone),
            container_gone: false,
            wake: None,
            done: false,
        }
    }

    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        match self.step().await {
            Ok(chunk) => chunk.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    async fn open(&mut self) -> io::Result<()> {
        if self.opts.follow {
            // Watch before the first read, so no write after it goes unseen.
            self.wake = Some(FileChanges::new(&self.path));
        }
        let mut file = tokio::fs::File::open(&self.path).await?;
        let meta = file.metadata().await?;
        self.identity = (meta.dev(), meta.ino());
        self.pos = match self.opts.tail_lines {
            Some(n) => tail_offset(&mut file, meta.len(), n).await?,
            None => 0,
        };
        file.seek(SeekFrom::Start(self.pos)).await?;
        self.file = Some(file);
        Ok(())
    }

    /// Read until there is output to give, or the end.
    async fn step(&mut self) -> io::Result<Option<Bytes>> {
        if self.file.is_none() {
            self.open().await?;
        }
        let mut chunk = vec![0; READ_CHUNK];
        loop {
            let file = self.file.as_mut().expect("opened above");
            let n = file.read(&mut chunk).await?;
            if n > 0 {
                self.pos += n as u64;
                self.buf.extend_from_slice(&chunk[..n]);
                let mut out = Vec::new();
                self.consume_lines(&mut out);
                if let Some(bytes) = self.emit(out) {
                    return Ok(Some(bytes));
                }
                continue;
            }
            if self.opts.follow && self.reopen_if_rotated().await? {
                continue;
            }
            if !self.opts.follow || self.container_gone {
                let mut out = Vec::new();
                // A record cut short (the writer died mid-write) still shows.
                let rest = std::mem::take(&mut self.buf);
                if let Ok(rec) = parse_cri_record(&rest) {
                    self.lines.push(rec, &mut out);
                }
                self.lines.finish(&mut out);
                let last = self.emit(out);
                self.done = true;
                return Ok(last);
            }
            self.wait().await;
        }
    }

    /// Feed every complete line of `buf` to the assembler.
    fn consume_lines(&mut self, out: &mut Vec<u8>) {
        let Some(end) = self.buf.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        for line in self.buf[..end].split(|b| *b == b'\n') {
            match parse_cri_record(line) {
                Ok(rec) => self.lines.push(rec, out),
                // kubelet skips what it cannot parse, too.
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "skipping log line")
                }
            }
        }
        self.buf.drain(..=end);
    }

    /// Apply `limit_bytes`; `None` for nothing to give.
    fn emit(&mut self, mut out: Vec<u8>) -> Option<Bytes> {
        if out.is_empty() {
            return None;
        }
        if let Some(remaining) = self.remaining.as_mut() {
            if out.len() >= *remaining {
                out.truncate(*remaining);
                self.done = true;
            }
            *remaining -= out.len();
            if out.is_empty() {
                return None;
            }
        }
        Some(Bytes::from(out))
    }

    /// At the end of the open file: has the writer moved on to a new file at
    /// `path` (rotation), or truncated this one? Then read from the start of
    /// what is there now.
    async fn reopen_if_rotated(&mut self) -> io::Result<bool> {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m,
            // Renamed away, new one not created yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if (meta.dev(), meta.ino()) != self.identity {
            let next = self.file_after_ours().await?;
            let file = match tokio::fs::File::open(&next).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            let meta = file.metadata().await?;
            self.identity = (meta.dev(), meta.ino());
            self.file = Some(file);
        } else if meta.len() < self.pos {
            self.file
                .as_mut()
                .expect("open")
                .seek(SeekFrom::Start(0))
                .await?;
        } else {
            return Ok(false);
        }
        self.pos = 0;
        // The old file ended in whole records; anything left is a record
        // the writer never finished.
        self.buf.clear();
        Ok(true)
    }

    /// The file written after the one we have open: if the writer rotated
    /// more than once since we last looked, the next rotated file (ours is
    /// among them, renamed), else the live one. Following by path alone
    /// (`tail -F`) would skip whole files under a fast writer.
    async fn file_after_ours(&mut self) -> io::Result<PathBuf> {
        let path = self.path.clone();
        let ours = self.identity;
        tokio::task::spawn_blocking(move || {
            let mut after_ours = false;
            for f in super::writer::rotated_files(&path)? {
                let Ok(meta) = std::fs::metadata(&f) else {
                    continue;
                };
                if (meta.dev(), meta.ino()) == ours {
                    after_ours = true;
                } else if after_ours {
                    return Ok(f);
                }
            }
            Ok(path)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn wait(&mut self) {
        let wake = self.wake.as_mut().expect("following");
        match self.gone.as_mut() {
            Some(gone) => {
                tokio::select! {
                    _ = gone => {
                        self.gone = None;
                        self.container_gone = true;
                    }
                    _ = wake.changed() => {}
                }
            }
            None => wake.changed().await,
        }
    }
}

/// Where in a file the last `n` lines start. Lines are `F` records (a `P`
/// record belongs to the line its `F` ends); an unterminated last record is
/// being written and does not count. Reads backwards in growing windows.
async fn tail_offset(file: &mut tokio::fs::File, len: u64, n: usize) -> io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start)).await?;
        let mut data = vec![0; (len - start) as usize];
        file.read_exact(&mut data).await?;
        let mut pos = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut full_lines = 0;
        while pos > 0 {
            let newline = pos - 1;
            let line_start = match data[..newline].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if start == 0 => 0,
                None => break, // cut by the window
            };
            if parse_cri_record(&data[line_start..newline]).is_ok_and(|r| !r.partial) {
                full_lines += 1;
                if full_lines > n {
                    return Ok(start + pos as u64);
                }
            }
            pos = line_start;
        }
        if start == 0 {
            return Ok(0);
        }
        window *= 4;
    }
}

/// nix's `Inotify` is `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Wakes a follower when something in the log's directory changes
/// (writes, and the rename + create of a rotation); polls without inotify.
struct FileChanges {
    inotify: Option<AsyncFd<InotifyFd>>,
}

impl FileChanges {
    fn new(path: &Path) -> Self {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let watch = || -> io::Result<AsyncFd<InotifyFd>> {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
            let events = AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE;
            inotify.add_watch(dir, events)?;
            // SAFETY: the fd is owned by the `Inotify` inside the `AsyncFd`,
            // so it stays open and the same for the `AsyncFd`'s whole life.
            Ok(unsafe {
                AsyncFd::register_with_interest(InotifyFd(inotify), tokio::io::Interest::READABLE)?
            })
        };
        let inotify = watch()
            .inspect_err(|e| tracing::debug!(dir = %dir.display(), error = %e, "no inotify for log follow; polling"))
            .ok();
        Self { inotify }
    }

    /// Returns after a change, or after the poll interval.
    async fn changed(&mut self) {
        let Some(fd) = self.inotify.as_ref() else {
            tokio::time::sleep(POLL_WITHOUT_INOTIFY).await;
            return;
        };
        if let Ok(Ok(mut guard)) = tokio::time::timeout(FALLBACK_POLL, fd.readable()).await {
            // Only the wake-up matters; drain so the next wait blocks.
            let _ = guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::CriLogWriter;
    use futures::StreamExt;

    fn record(ts: &str, stream: &str, tag: &str, content: &str) -> String {
        format!("{ts} {stream} {tag} {content}\n")
    }

    type LogStreamBox = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

    const T1: &str = "2024-06-19T15:22:45.000000001Z";
    const T2: &str = "2024-06-19T15:22:46.5Z";
    const T3: &str = "2024-06-19T15:22:47.000000000Z";

    async fn read_all(path: &Path, opts: LogOptions) -> String {
        let chunks: Vec<_> = read_container_log(path, opts, std::future::pending())
            .collect()
            .await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    fn write_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn parses_records() {
        let r = parse_cri_record(b"2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!(r.timestamp, "2016-10-06T00:17:09.669794202Z");
        assert_eq!(r.stream, LogStream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"log content 1");
        let r =
            parse_cri_record(b"2016-10-06T00:17:09.669794203Z stderr P:extra  two spaces").unwrap();
        assert!(r.partial);
        assert_eq!(r.content, b" two spaces");
        assert_eq!(
            parse_cri_record(b"2016-10-06T00:17:09Z stdout F")
                .unwrap()
                .content,
            b""
        );
        assert!(parse_cri_record(b"2016-10-06T00:17:09Z stdin F x").is_err());
        assert!(parse_cri_record(b"2016-10-06T00:17:09Z stdout X x").is_err());
        assert!(parse_cri_record(b"").is_err());
        assert!(parse_cri_record(b"just text").is_err());
    }

    #[tokio::test]
    async fn joins_partial_records() {
        let (_d, path) = write_file(
            &[
                record(T1, "stdout", "P", "hel"),
                record(T1, "stderr", "P", "err "),
                record(T2, "stdout", "F", "lo"),
                record(T2, "stderr", "F", "line"),
                record(T3, "stdout", "F", ""),
            ]
            .concat(),
        );
        // Without timestamps pieces pass through in file order, as kubelet does.
        assert_eq!(
            read_all(&path, LogOptions::default()).await,
            "helerr lo\nline\n\n"
        );
        // With them, a line is joined per stream under its first piece's time.
        assert_eq!(
            read_all(
                &path,
                LogOptions {
                    timestamps: true,
                    ..Default::default()
                }
            )
            .await,
            "2024-06-19T15:22:45.000000001Z hello\n\
             2024-06-19T15:22:45.000000001Z err line\n\
             2024-06-19T15:22:47.000000000Z \n"
        );
    }

    #[tokio::test]
    async fn a_trailing_piece_shows_at_the_end() {
        let (_d, path) = write_file(
            &[
                record(T1, "stdout", "F", "a"),
                record(T2, "stdout", "P", "Password: "),
            ]
            .concat(),
        );
        assert_eq!(
            read_all(&path, LogOptions::default()).await,
            "a\nPassword: "
        );
        assert_eq!(
            read_all(
                &path,
                LogOptions {
                    timestamps: true,
                    ..Default::default()
                }
            )
            .await,
            "2024-06-19T15:22:45.000000001Z a\n2024-06-19T15:22:46.500000000Z Password: "
        );
    }

    #[tokio::test]
    async fn skips_malformed_lines() {
        let (_d, path) = write_file(
            &[
                record(T1, "stdout", "F", "a"),
                "garbage\n".into(),
                record(T2, "stdout", "F", "b"),
            ]
            .concat(),
        );
        assert_eq!(read_all(&path, LogOptions::default()).await, "a\nb\n");
    }

    #[tokio::test]
    async fn tail_counts_full_lines() {
        let mut content = String::new();
        for i in 0..10 {
            content += &record(T1, "stdout", "F", &format!("line {i}"));
        }
        content += &record(T2, "stdout", "P", "long ");
        content += &record(T2, "stdout", "P", "line ");
        content += &record(T2, "stdout", "F", "end");
        let (_d, path) = write_file(&content);
        let tail = |n| {
            read_all(
                &path,
                LogOptions {
                    tail_lines: Some(n),
                    ..Default::default()
                },
            )
        };
        assert_eq!(tail(2).await, "line 9\nlong line end\n");
        assert_eq!(tail(1).await, "long line end\n");
        assert_eq!(tail(0).await, "");
        assert_eq!(tail(100).await.lines().count(), 11);
    }

    #[tokio::test]
    async fn tail_reads_backwards_past_the_first_window() {
        let line = "x".repeat(1000);
        let mut content = String::new();
        for i in 0..300 {
            content += &record(T1, "stdout", "F", &format!("{i} {line}"));
        }
        let (_d, path) = write_file(&content);
        let out = read_all(
            &path,
            LogOptions {
                tail_lines: Some(150),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(out.lines().count(), 150);
        assert!(out.starts_with("150 x"));
    }

    #[tokio::test]
    async fn since_time_and_limit_bytes() {
        let (_d, path) = write_file(
            &[
                record(T1, "stdout", "F", "old"),
                record(T2, "stdout", "F", "new"),
                record(T3, "stderr", "F", "newer"),
            ]
            .concat(),
        );
        let since = LogOptions {
            since_time: Some("2024-06-19T15:22:46Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(read_all(&path, since).await, "new\nnewer\n");
        assert_eq!(
            read_all(
                &path,
                LogOptions {
                    limit_bytes: Some(6),
                    ..Default::default()
                }
            )
            .await,
            "old\nne"
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<_> = read_container_log(
            &dir.path().join("nope.log"),
            LogOptions::default(),
            std::future::pending(),
        )
        .collect()
        .await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn follow_reads_growth_and_rotation_until_the_container_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        // Each record is about 45 bytes: rotation every two lines.
        let mut writer = CriLogWriter::create(&path, 100, 3).unwrap();
        writer.write(LogStream::Stdout, b"before\n").unwrap();

        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream: LogStreamBox = Box::pin(read_container_log(&path, opts, async move {
            let _ = gone_rx.await;
        }));
        let mut seen = String::new();

        async fn read_until(stream: &mut LogStreamBox, seen: &mut String, want: &str) {
            tokio::time::timeout(Duration::from_millis(500), async {
                while !seen.ends_with(want) {
                    let chunk = stream.next().await.expect("stream still open").unwrap();
                    seen.push_str(std::str::from_utf8(&chunk).unwrap());
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{want:?} within 500 ms; got {seen:?}"));
        }

        read_until(&mut stream, &mut seen, "before\n").await;
        writer.write(LogStream::Stdout, b"one\n").unwrap();
        read_until(&mut stream, &mut seen, "one\n").await;
        // These rotate the file twice under the follower.
        for line in ["two\n", "three\n", "four\n", "five\n"] {
            writer.write(LogStream::Stderr, line.as_bytes()).unwrap();
        }
        read_until(&mut stream, &mut seen, "five\n").await;
        assert_eq!(seen, "before\none\ntwo\nthree\nfour\nfive\n");
        assert!(
            !crate::logs::writer::rotated_files(&path)
                .unwrap()
                .is_empty()
        );

        // The container's last words, then it is gone: the stream drains and ends.
        writer.write(LogStream::Stdout, b"bye\n").unwrap();
        drop(writer);
        gone_tx.send(()).unwrap();
        let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(2), stream.collect::<Vec<_>>())
            .await
            .expect("stream ends once the container is gone");
        let rest: String = rest
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(rest, "bye\n");
    }
}
