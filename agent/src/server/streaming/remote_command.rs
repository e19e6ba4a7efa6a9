//! The SPDY side of kubelet's remote-command protocol, shared by exec and
//! attach: `v4.channel.k8s.io` over SPDY/3.1 (kubectl ≤ 1.29, and client-go
//! tools that never moved to WebSockets). The client opens one SPDY stream
//! per `streamType` header — error, stdin, stdout, stderr, resize — and the
//! session starts once every stream its query asked for is open.

use std::time::Duration;

use tokio::sync::mpsc;

use super::channel::TerminalSize;
use super::spdy::session::IncomingStream;

/// The SPDY streaming protocols served, preferred first.
pub const SPDY_PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];
/// How long a SPDY client has to open every stream it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// The streams a session's query asks for (`error` always).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The streams of one session, by type.
#[derive(Default)]
pub struct Streams {
    pub error: Option<IncomingStream>,
    pub stdin: Option<IncomingStream>,
    pub stdout: Option<IncomingStream>,
    pub stderr: Option<IncomingStream>,
    pub resize: Option<IncomingStream>,
}

impl Streams {
    fn complete(&self, w: Wanted) -> bool {
        self.error.is_some()
            && (!w.stdin || self.stdin.is_some())
            && (!w.stdout || self.stdout.is_some())
            && (!w.stderr || self.stderr.is_some())
            && (!w.tty || self.resize.is_some())
    }
}

/// Accepts (replies to) the client's streams until every wanted one is
/// open; `None` when the client leaves or takes longer than 30 s, as
/// kubelet's `streamCreationTimeout` gives up.
pub async fn collect(
    incoming: &mut mpsc::Receiver<IncomingStream>,
    wanted: Wanted,
    verb: &str,
) -> Option<Streams> {
    let mut streams = Streams::default();
    let collected = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while !streams.complete(wanted) {
            let s = incoming.recv().await?;
            s.writer.reply();
            let slot = match s.header("streamType").unwrap_or_default() {
                "error" => &mut streams.error,
                "stdin" => &mut streams.stdin,
                "stdout" => &mut streams.stdout,
                "stderr" => &mut streams.stderr,
                "resize" => &mut streams.resize,
                other => {
                    tracing::debug!("{verb}: unknown stream type {other:?}");
                    s.writer.reset();
                    continue;
                }
            };
            *slot = Some(s);
        }
        Some(())
    })
    .await;
    match collected {
        Ok(Some(())) => Some(streams),
        _ => {
            tracing::info!("{verb}: the client did not open the streams it asked for");
            None
        }
    }
}

/// The terminal sizes a resize stream carries, as they complete.
pub fn sizes(mut resize: IncomingStream) -> mpsc::Receiver<(u16, u16)> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(b) = resize.data.recv().await {
            pending.extend_from_slice(&b);
            for size in take_sizes(&mut pending) {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The terminal sizes complete in `pending` (client-go writes one JSON
/// object per resize, back to back); what is left stays for later.
fn take_sizes(pending: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(pending).into_iter::<TerminalSize>();
    let mut used = 0;
    while let Some(Ok(s)) = stream.next() {
        sizes.push((s.width, s.height));
        used = stream.byte_offset();
    }
    pending.drain(..used);
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_split_across_frames_are_read_whole() {
        let mut pending = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(take_sizes(&mut pending), [(80, 24)]);
        pending.extend_from_slice(br#""Height":30}"#);
        assert_eq!(take_sizes(&mut pending), [(100, 30)]);
        assert!(pending.is_empty());
    }
}
