//! Writing a container's output as CRI log records, with size rotation.
//!
//! Synchronous and std-only on purpose: it runs inside the single-threaded
//! per-container shim, which has no async runtime.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{LogStream, format_timestamp};

/// Longest content of one record; longer lines are split into `P` records
/// (containerd's default `max_container_log_line_size`).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One container run's log file, rotated by size like kubelet's container
/// log manager: `0.log` becomes `0.log.<UTC time>` and at most `max_files`
/// files (the live one included) are kept.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl CriLogWriter {
    /// Open `path` for appending (a restarted shim continues the file),
    /// creating its directory. `max_size_bytes` 0 never rotates;
    /// `max_files` counts the live file, so 1 keeps no rotated files.
    pub fn create(
        path: impl Into<PathBuf>,
        max_size_bytes: u64,
        max_files: usize,
    ) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            max_size: max_size_bytes,
            max_files: max_files.max(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `bytes` read from the container's `stream`, stamped now.
    pub fn write(&mut self, stream: LogStream, bytes: &[u8]) -> io::Result<()> {
        self.write_at(stream, bytes, jiff::Timestamp::now())
    }

    /// [`Self::write`] with an explicit time.
    ///
    /// Each `\n`-terminated line becomes an `F` record. What follows the last
    /// newline is written at once as a `P` record (as conmon does) rather
    /// than held back, so a prompt without a newline is visible and nothing
    /// is lost if the shim dies; the reader joins the pieces.
    pub fn write_at(
        &mut self,
        stream: LogStream,
        bytes: &[u8],
        now: jiff::Timestamp,
    ) -> io::Result<()> {
        let timestamp = format_timestamp(now);
        let mut buf = Vec::with_capacity(bytes.len() + 64);
        for record in records(bytes) {
            let len = record_len(&timestamp, stream, record.content);
            // Rotate before a record would push the file past the limit, so
            // a file holds whole records and stays under max size (unless
            // one record alone is bigger).
            if self.max_size > 0
                && self.size + buf.len() as u64 > 0
                && self.size + (buf.len() + len) as u64 > self.max_size
            {
                self.flush_buf(&mut buf)?;
                self.rotate(now)?;
            }
            encode_record(&mut buf, &timestamp, stream, record.partial, record.content);
        }
        self.flush_buf(&mut buf)
    }

    fn flush_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if !buf.is_empty() {
            // One write per call: a reader never sees half a record unless
            // the disk is full.
            self.file.write_all(buf)?;
            self.size += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }

    /// `0.log` → `0.log.<time>`, a fresh `0.log`, then drop the oldest
    /// rotated files beyond `max_files - 1`.
    fn rotate(&mut self, now: jiff::Timestamp) -> io::Result<()> {
        let rotated = rotated_name(&self.path, now);
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        let mut old = rotated_files(&self.path)?;
        let keep = self.max_files - 1;
        if old.len() > keep {
            let excess = old.len() - keep;
            for f in old.drain(..excess) {
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `<path>.<YYYYMMDD-HHMMSS.nnnnnnnnn>` in UTC: kubelet's suffix plus
/// nanoseconds, so that several rotations within a second do not collide and
/// names sort by age.
fn rotated_name(path: &Path, now: jiff::Timestamp) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}", now.strftime("%Y%m%d-%H%M%S.%N")));
    PathBuf::from(name)
}

/// Rotated files of `path`, oldest first.
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let mut prefix = name.to_owned();
    prefix.push(".");
    let prefix = prefix.as_encoded_bytes();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_encoded_bytes().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// One CRI record to write: content without its newline.
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    partial: bool,
    content: &'a [u8],
}

/// Split output into records: complete lines are `F` (a trailing `\r` is
/// dropped, as Go's `ReadLine` does), lines over [`MAX_LINE_BYTES`] are
/// split into `P` pieces, and an unterminated tail is `P`.
fn records(bytes: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = bytes;
    let mut pieces: Vec<Record<'_>> = Vec::new();
    std::iter::from_fn(move || {
        loop {
            if let Some(r) = pieces.pop() {
                return Some(r);
            }
            if rest.is_empty() {
                return None;
            }
            let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let line = &rest[..i];
                    rest = &rest[i + 1..];
                    (line.strip_suffix(b"\r").unwrap_or(line), true)
                }
                None => (std::mem::take(&mut rest), false),
            };
            if line.is_empty() {
                return Some(Record {
                    partial: false,
                    content: line,
                });
            }
            let chunks: Vec<&[u8]> = line.chunks(MAX_LINE_BYTES).collect();
            let last = chunks.len() - 1;
            // Reversed, since pieces are popped from the end.
            pieces = chunks
                .into_iter()
                .enumerate()
                .rev()
                .map(|(i, c)| Record {
                    partial: i < last || !complete,
                    content: c,
                })
                .collect();
        }
    })
}

fn record_len(timestamp: &str, stream: LogStream, content: &[u8]) -> usize {
    timestamp.len() + 1 + stream.as_str().len() + 3 + content.len() + 1
}

fn encode_record(
    buf: &mut Vec<u8>,
    timestamp: &str,
    stream: LogStream,
    partial: bool,
    content: &[u8],
) {
    buf.extend_from_slice(timestamp.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(stream.as_str().as_bytes());
    buf.extend_from_slice(if partial { b" P " } else { b" F " });
    buf.extend_from_slice(content);
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn read(path: &Path) -> String {
        String::from_utf8(std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn lines_become_full_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = CriLogWriter::create(&path, 0, 5).unwrap();
        w.write_at(
            LogStream::Stdout,
            b"hello\nworld\n",
            at("2024-06-19T15:22:45.5Z"),
        )
        .unwrap();
        w.write_at(LogStream::Stderr, b"oops\r\n\n", at("2024-06-19T15:22:46Z"))
            .unwrap();
        assert_eq!(
            read(&path),
            "2024-06-19T15:22:45.500000000Z stdout F hello\n\
             2024-06-19T15:22:45.500000000Z stdout F world\n\
             2024-06-19T15:22:46.000000000Z stderr F oops\n\
             2024-06-19T15:22:46.000000000Z stderr F \n"
        );
    }

    #[test]
    fn unterminated_output_is_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::create(&path, 0, 5).unwrap();
        let t = at("2024-01-01T00:00:00Z");
        w.write_at(LogStream::Stdout, b"a\nEnter name: ", t)
            .unwrap();
        w.write_at(LogStream::Stdout, b"bob\n", t).unwrap();
        assert_eq!(
            read(&path),
            "2024-01-01T00:00:00.000000000Z stdout F a\n\
             2024-01-01T00:00:00.000000000Z stdout P Enter name: \n\
             2024-01-01T00:00:00.000000000Z stdout F bob\n"
        );
    }

    #[test]
    fn long_lines_are_split_at_16k() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let r: Vec<_> = records(&input)
            .map(|r| (r.partial, r.content.len()))
            .collect();
        assert_eq!(
            r,
            [(true, MAX_LINE_BYTES), (true, MAX_LINE_BYTES), (false, 10)]
        );
        let r: Vec<_> = records(&long[..MAX_LINE_BYTES])
            .map(|r| (r.partial, r.content.len()))
            .collect();
        assert_eq!(r, [(true, MAX_LINE_BYTES)]);
        let mut exact = vec![b'y'; MAX_LINE_BYTES];
        exact.push(b'\n');
        let r: Vec<_> = records(&exact)
            .map(|r| (r.partial, r.content.len()))
            .collect();
        assert_eq!(r, [(false, MAX_LINE_BYTES)]);
        assert_eq!(records(b"").count(), 0);
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // Each record is 30 (time) + 1 + 6 (stream) + 3 (tag) + 5 + 1 = 46 bytes.
        let mut w = CriLogWriter::create(&path, 100, 3).unwrap();
        for i in 0..10 {
            let t = jiff::Timestamp::from_second(1_700_000_000 + i).unwrap();
            w.write_at(LogStream::Stdout, format!("line{i}\n").as_bytes(), t)
                .unwrap();
        }
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        for f in rotated.iter().chain([&path]) {
            assert!(std::fs::metadata(f).unwrap().len() <= 100);
        }
        // Two records per file: the live file has the last two lines, the
        // rotated ones the two pairs before; the file holding lines 4 and 5
        // was rotated away when line 6 was written.
        assert!(read(&path).contains("F line8\n") && read(&path).contains("F line9\n"));
        assert!(read(&rotated[1]).contains("F line7\n"));
        assert!(read(&rotated[0]).contains("F line4\n"));
        assert!(
            rotated[0]
                .to_str()
                .unwrap()
                .ends_with("0.log.20231114-221326.000000000"),
            "{rotated:?}"
        );
    }

    #[test]
    fn one_big_write_rotates_mid_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::create(&path, 100, 10).unwrap();
        w.write_at(
            LogStream::Stderr,
            b"aaaa\nbbbb\ncccc\n",
            at("2024-01-01T00:00:00Z"),
        )
        .unwrap();
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 1);
        assert_eq!(read(&rotated[0]).lines().count(), 2);
        assert_eq!(
            read(&path),
            "2024-01-01T00:00:00.000000000Z stderr F cccc\n"
        );
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let t = at("2024-01-01T00:00:00Z");
        CriLogWriter::create(&path, 0, 2)
            .unwrap()
            .write_at(LogStream::Stdout, b"one\n", t)
            .unwrap();
        CriLogWriter::create(&path, 0, 2)
            .unwrap()
            .write_at(LogStream::Stdout, b"two\n", t)
            .unwrap();
        assert_eq!(read(&path).lines().count(), 2);
    }
}
