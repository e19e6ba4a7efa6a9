//! The WebSocket channel protocols of exec and attach (apimachinery's
//! `wsstream`): every message carries one channel's data, the channel named
//! first — 0 stdin, 1 stdout, 2 stderr, 3 the final `Status` (JSON), 4 a
//! terminal resize (`{"Width":..,"Height":..}`), and in v5 255 to close a
//! channel (the client's stdin at its end).
//!
//! Two encodings of the same channels:
//! - binary (`v5.channel.k8s.io`, `v4.channel.k8s.io`; kubectl, client-go):
//!   a binary message, the channel a byte before the data;
//! - base64 (`v4.base64.channel.k8s.io`, for clients that can only send
//!   text, such as a browser's terminal): a text message, the channel an
//!   ASCII digit (`'0' + channel`) before the data in standard base64.

use axum::extract::ws::{CloseFrame, Message, close_code};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel.
pub const CLOSE: u8 = 255;

pub const V5_BINARY: &str = "v5.channel.k8s.io";
pub const V4_BINARY: &str = "v4.channel.k8s.io";
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";

/// The subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 3] = [V5_BINARY, V4_BINARY, V4_BASE64];

/// How a negotiated subprotocol puts channels on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCodec {
    Binary,
    Base64,
}

impl ChannelCodec {
    /// The codec of the negotiated subprotocol (binary unless base64 was
    /// chosen).
    pub fn of(protocol: Option<&str>) -> Self {
        match protocol {
            Some(V4_BASE64) => Self::Base64,
            _ => Self::Binary,
        }
    }

    /// One channel's data as a message.
    pub fn frame(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Self::Binary => {
                let mut v = Vec::with_capacity(data.len() + 1);
                v.push(channel);
                v.extend_from_slice(data);
                Message::Binary(Bytes::from(v))
            }
            Self::Base64 => {
                let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
                s.push(char::from(b'0' + channel));
                STANDARD.encode_string(data, &mut s);
                Message::Text(s.into())
            }
        }
    }

    /// A client's message as the channel byte and the data; `None` for a
    /// message that carries no channel data (ping, close) or base64 that
    /// does not decode (dropped, as apimachinery drops it).
    pub fn unframe(self, msg: Message) -> Option<Bytes> {
        match (self, msg) {
            (Self::Binary, Message::Binary(b)) => Some(b),
            // The Python client sends its frames as text: the channel byte
            // and the data, the same bytes.
            (Self::Binary, Message::Text(t)) => Some(Bytes::copy_from_slice(t.as_bytes())),
            (Self::Base64, Message::Text(t)) => decode_base64(t.as_bytes()),
            (Self::Base64, Message::Binary(b)) => decode_base64(&b),
            _ => None,
        }
    }
}

fn decode_base64(msg: &[u8]) -> Option<Bytes> {
    let (&digit, data) = msg.split_first()?;
    let mut out = vec![digit.wrapping_sub(b'0')];
    STANDARD.decode_vec(data, &mut out).ok()?;
    Some(Bytes::from(out))
}

/// What the client sent on one message (channel byte first).
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Stdin(Bytes),
    Resize {
        width: u16,
        height: u16,
    },
    CloseStdin,
    /// Another channel, an empty frame, or a resize that does not parse.
    Ignored,
}

/// `TerminalSize` as client-go encodes it (Go field names, no tags).
#[derive(serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

pub fn decode_inbound(data: Bytes) -> Inbound {
    let Some(&channel) = data.first() else {
        return Inbound::Ignored;
    };
    let payload = data.slice(1..);
    match channel {
        STDIN => Inbound::Stdin(payload),
        RESIZE => match serde_json::from_slice::<TerminalSize>(&payload) {
            Ok(s) => Inbound::Resize {
                width: s.width,
                height: s.height,
            },
            Err(_) => Inbound::Ignored,
        },
        CLOSE if payload.first() == Some(&STDIN) => Inbound::CloseStdin,
        _ => Inbound::Ignored,
    }
}

/// A close with code 1000: client-go reads the end of its streams from
/// it (a close without a code is an error there).
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_frames_decode_by_channel() {
        assert_eq!(
            decode_inbound(Bytes::from_static(b"\x00abc")),
            Inbound::Stdin(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            decode_inbound(Bytes::from_static(b"\x04{\"Width\":120,\"Height\":40}")),
            Inbound::Resize {
                width: 120,
                height: 40
            }
        );
        assert_eq!(
            decode_inbound(Bytes::from_static(b"\xff\x00")),
            Inbound::CloseStdin
        );
        assert_eq!(
            decode_inbound(Bytes::from_static(b"\xff\x01")),
            Inbound::Ignored
        );
        assert_eq!(decode_inbound(Bytes::new()), Inbound::Ignored);
    }

    #[test]
    fn binary_frames_put_the_channel_byte_first() {
        let c = ChannelCodec::of(Some(V5_BINARY));
        assert_eq!(c, ChannelCodec::Binary);
        assert_eq!(
            c.frame(ERROR, b"{}"),
            Message::Binary(Bytes::from_static(b"\x03{}"))
        );
        assert_eq!(
            c.unframe(Message::Text("\x00ls\n".into())),
            Some(Bytes::from_static(b"\x00ls\n"))
        );
        assert_eq!(c.unframe(Message::Ping(Bytes::new())), None);
    }

    // The examples of apimachinery's wsstream: "foo\n" on stdin is
    // `0Zm9vCg==`, "\n" on stdout `1Cg==`.
    #[test]
    fn base64_frames_are_text_with_an_ascii_channel() {
        let c = ChannelCodec::of(Some(V4_BASE64));
        assert_eq!(c, ChannelCodec::Base64);
        assert_eq!(c.frame(STDOUT, b"\n"), Message::Text("1Cg==".into()));
        assert_eq!(c.frame(ERROR, b""), Message::Text("3".into()));
        assert_eq!(
            c.unframe(Message::Text("0Zm9vCg==".into())),
            Some(Bytes::from_static(b"\x00foo\n"))
        );
        assert_eq!(
            decode_inbound(
                c.unframe(Message::Text("4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9".into()))
                    .unwrap()
            ),
            Inbound::Resize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(c.unframe(Message::Text("0not base64!".into())), None);
        assert_eq!(c.unframe(Message::Text("".into())), None);
    }
}
