//! The server side of a SPDY/3.1 session over any byte stream (an upgraded
//! HTTP connection, or a WebSocket carrying SPDY bytes): the client opens
//! streams, the server accepts them, replies, and reads and writes data.
//!
//! No flow-control windows are kept: the Kubernetes streaming clients
//! (spdystream) send no WINDOW_UPDATE and honour none, so neither side waits.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{self, FLAG_FIN, Frame, HeaderDecoder, HeaderEncoder, Headers};

/// Frames larger than this are refused (the format allows 16 MiB; nothing
/// the clients send comes close).
const MAX_FRAME: usize = 1 << 24;

/// A stream the client opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// Data from the client; ends (`None`) at its FIN or reset.
    pub data: mpsc::UnboundedReceiver<Bytes>,
    pub writer: StreamWriter,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        frame::header(&self.headers, name)
    }
}

/// Writes to one stream; cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::UnboundedSender<Frame>,
}

impl StreamWriter {
    /// SYN_REPLY: the client's `CreateStream` waits for it.
    pub fn reply(&self) {
        let _ = self.out.send(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Vec::new(),
        });
    }

    /// Sends data; false once the session is gone.
    pub fn send(&self, data: Bytes) -> bool {
        self.out
            .send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data,
            })
            .is_ok()
    }

    /// Half-closes the stream (FIN): the client reads its end.
    pub fn close(&self) {
        let _ = self.out.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
    }

    pub fn reset(&self) {
        let _ = self.out.send(Frame::RstStream {
            stream_id: self.id,
            status: frame::RST_CANCEL,
        });
    }
}

/// Runs the session until the client goes away: streams the client opens
/// arrive on the returned channel; the session ends when it closes and every
/// writer is dropped, or when the connection ends.
pub fn serve<S>(io: S) -> mpsc::Receiver<IncomingStream>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    let (accept_tx, accept_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut encoder = HeaderEncoder::default();
        while let Some(f) = out_rx.recv().await {
            let bytes = frame::encode(&f, &mut encoder);
            if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = read_frames(reader, out_tx, accept_tx).await {
            tracing::debug!("SPDY session ended: {e}");
        }
    });
    accept_rx
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    out: mpsc::UnboundedSender<Frame>,
    accept: mpsc::Sender<IncomingStream>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut decoder = HeaderDecoder::default();
    let mut streams: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    loop {
        let mut head = [0u8; 8];
        if let Err(e) = reader.read_exact(&mut head).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e.into()),
            };
        }
        let len = frame::payload_len(&head);
        if len > MAX_FRAME {
            return Err(format!("SPDY frame of {len} bytes").into());
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await?;
        match frame::decode(&head, Bytes::from(payload), &mut decoder)? {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        out: out.clone(),
                    },
                };
                if accept.send(stream).await.is_err() {
                    // Nobody accepts streams any more: refuse this one.
                    let _ = out.send(Frame::RstStream {
                        stream_id,
                        status: frame::RST_PROTOCOL_ERROR,
                    });
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(tx) = streams.get(&stream_id)
                    && tx.send(data).is_err()
                {
                    streams.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id });
            }
            Frame::GoAway { .. } => return Ok(()),
            Frame::SynReply { .. } | Frame::Ignored => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, BytesMut};

    /// A client's side of the wire, as spdystream writes it.
    struct Client {
        enc: HeaderEncoder,
        dec: HeaderDecoder,
        io: tokio::io::DuplexStream,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let b = frame::encode(&f, &mut self.enc);
            self.io.write_all(&b).await.unwrap();
        }

        async fn recv(&mut self) -> Frame {
            loop {
                if self.buf.len() >= 8 {
                    let head: [u8; 8] = self.buf[..8].try_into().unwrap();
                    let len = frame::payload_len(&head);
                    if self.buf.len() >= 8 + len {
                        let payload = Bytes::copy_from_slice(&self.buf[8..8 + len]);
                        self.buf.advance(8 + len);
                        return frame::decode(&head, payload, &mut self.dec).unwrap();
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the session closed");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    #[tokio::test]
    async fn streams_are_accepted_replied_to_and_carry_data_both_ways() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut accepted = serve(server_io);
        let mut client = Client {
            enc: HeaderEncoder::default(),
            dec: HeaderDecoder::default(),
            io: client_io,
            buf: BytesMut::new(),
        };
        client
            .send(Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: vec![("streamType".into(), "data".into())],
            })
            .await;
        let mut s = accepted.recv().await.unwrap();
        assert_eq!(s.id, 1);
        assert_eq!(s.header("streamtype"), Some("data"));
        s.writer.reply();
        assert_eq!(
            client.recv().await,
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![]
            }
        );
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ping"),
            })
            .await;
        assert_eq!(s.data.recv().await.unwrap(), Bytes::from_static(b"ping"));
        assert!(s.data.recv().await.is_none(), "FIN ends the client's data");
        s.writer.send(Bytes::from_static(b"pong"));
        s.writer.close();
        assert_eq!(
            client.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"pong")
            }
        );
        assert!(matches!(
            client.recv().await,
            Frame::Data {
                flags: FLAG_FIN,
                ..
            }
        ));
        client.send(Frame::Ping { id: 9 }).await;
        assert_eq!(client.recv().await, Frame::Ping { id: 9 });
    }
}
