//! SPDY/3 frames (draft-mbelshe-httpbis-spdy-00 §2.2): the byte layout of
//! each frame a streaming peer sends, and header blocks, which are
//! zlib-compressed with one stream per direction for the whole session.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::HEADER_DICTIONARY;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// Header names and values as SPDY carries them (names lower-case).
pub type Headers = Vec<(String, String)>;

/// The value of header `name`, compared as HTTP does, case-insensitively.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown control frames: read
    /// and dropped (the peers here send no flow control that matters).
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY frame of version {0}, only version 3 is spoken")]
    Version(u16),
    #[error("SPDY {what} frame too short ({len} bytes)")]
    Short { what: &'static str, len: usize },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

/// The 8-byte frame header: whether a control frame, and how long the rest is.
pub fn payload_len(head: &[u8; 8]) -> usize {
    u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize
}

/// Decodes header blocks: one zlib stream for the whole session.
pub struct HeaderDecoder {
    zlib: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            zlib: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.zlib.total_in();
            let res = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.zlib.total_in() - before) as usize;
            input = &input[used..];
            match res {
                Ok(Status::Ok | Status::BufError) => {
                    // Done once the input is spent and there was room to spare.
                    if input.is_empty() && out.capacity() - out.len() >= 256 {
                        return Ok(out);
                    }
                }
                Ok(Status::StreamEnd) => return Ok(out),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&HEADER_DICTIONARY)
                        .map_err(|e| FrameError::HeaderBlock(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::HeaderBlock(e.to_string())),
            }
        }
    }

    pub fn decode(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate(compressed)?;
        parse_header_block(&raw)
    }
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    let bad = |what: &str| FrameError::HeaderBlock(what.to_owned());
    let take = |raw: &mut &[u8]| -> Result<String, FrameError> {
        if raw.len() < 4 {
            return Err(bad("truncated length"));
        }
        let n = raw.get_u32() as usize;
        if raw.len() < n {
            return Err(bad("truncated string"));
        }
        let s = String::from_utf8_lossy(&raw[..n]).into_owned();
        raw.advance(n);
        Ok(s)
    };
    if raw.len() < 4 {
        return Err(bad("no pair count"));
    }
    let count = raw.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut raw)?;
        let value = take(&mut raw)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Encodes header blocks: the other zlib stream of the session.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&HEADER_DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        HeaderEncoder { zlib }
    }
}

impl HeaderEncoder {
    pub fn encode(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (n, v) in headers {
            raw.put_u32(n.len() as u32);
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            input = &input[(self.zlib.total_in() - before) as usize..];
            // A sync flush is complete once it left room in the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(256));
        }
    }
}

fn control_head(buf: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    buf.put_u16(0x8000 | VERSION);
    buf.put_u16(kind);
    buf.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Serialises a frame the server sends (replies, data, resets, pings).
pub fn encode(frame: &Frame, headers: &mut HeaderEncoder) -> Bytes {
    let mut buf = BytesMut::new();
    match frame {
        Frame::SynReply {
            stream_id,
            flags,
            headers: h,
        } => {
            let block = headers.encode(h);
            control_head(&mut buf, SYN_REPLY, *flags, 4 + block.len());
            buf.put_u32(stream_id & 0x7fff_ffff);
            buf.extend_from_slice(&block);
        }
        Frame::SynStream {
            stream_id,
            flags,
            headers: h,
        } => {
            let block = headers.encode(h);
            control_head(&mut buf, SYN_STREAM, *flags, 10 + block.len());
            buf.put_u32(stream_id & 0x7fff_ffff);
            buf.put_u32(0);
            buf.put_u16(0);
            buf.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_head(&mut buf, RST_STREAM, 0, 8);
            buf.put_u32(stream_id & 0x7fff_ffff);
            buf.put_u32(*status);
        }
        Frame::Ping { id } => {
            control_head(&mut buf, PING, 0, 4);
            buf.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
        } => {
            control_head(&mut buf, GOAWAY, 0, 8);
            buf.put_u32(*last_good_stream_id);
            buf.put_u32(0);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            buf.put_u32(stream_id & 0x7fff_ffff);
            buf.put_u32(((*flags as u32) << 24) | (data.len() as u32 & 0x00ff_ffff));
            buf.extend_from_slice(data);
        }
        Frame::Ignored => {}
    }
    buf.freeze()
}

/// Parses one frame from its 8-byte header and its payload.
pub fn decode(
    head: &[u8; 8],
    payload: Bytes,
    headers: &mut HeaderDecoder,
) -> Result<Frame, FrameError> {
    let flags = head[4];
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Frame::Data {
            stream_id,
            flags,
            data: payload,
        });
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |what: &'static str, n: usize| {
        if payload.len() < n {
            Err(FrameError::Short {
                what,
                len: payload.len(),
            })
        } else {
            Ok(())
        }
    };
    let mut p = payload.clone();
    Ok(match kind {
        SYN_STREAM => {
            need("SYN_STREAM", 10)?;
            let stream_id = p.get_u32() & 0x7fff_ffff;
            p.advance(6); // associated stream, priority, slot
            Frame::SynStream {
                stream_id,
                flags,
                headers: headers.decode(&p)?,
            }
        }
        SYN_REPLY => {
            need("SYN_REPLY", 4)?;
            let stream_id = p.get_u32() & 0x7fff_ffff;
            Frame::SynReply {
                stream_id,
                flags,
                headers: headers.decode(&p)?,
            }
        }
        HEADERS => {
            // Its block still has to go through the session's zlib stream.
            need("HEADERS", 4)?;
            p.advance(4);
            headers.decode(&p)?;
            Frame::Ignored
        }
        RST_STREAM => {
            need("RST_STREAM", 8)?;
            Frame::RstStream {
                stream_id: p.get_u32() & 0x7fff_ffff,
                status: p.get_u32(),
            }
        }
        PING => {
            need("PING", 4)?;
            Frame::Ping { id: p.get_u32() }
        }
        GOAWAY => {
            need("GOAWAY", 4)?;
            Frame::GoAway {
                last_good_stream_id: p.get_u32() & 0x7fff_ffff,
            }
        }
        SETTINGS | WINDOW_UPDATE => Frame::Ignored,
        _ => Frame::Ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = HeaderEncoder::default();
        let mut dec = HeaderDecoder::default();
        let mut wire = BytesMut::new();
        for f in frames {
            wire.extend_from_slice(&encode(f, &mut enc));
        }
        let mut wire = wire.freeze();
        let mut out = Vec::new();
        while !wire.is_empty() {
            let head: [u8; 8] = wire[..8].try_into().unwrap();
            let len = payload_len(&head);
            let payload = wire.slice(8..8 + len);
            wire.advance(8 + len);
            out.push(decode(&head, payload, &mut dec).unwrap());
        }
        out
    }

    #[test]
    fn frames_survive_the_wire_with_one_zlib_stream_per_direction() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            // The second block reuses the first one's window: only a shared
            // zlib stream decodes it.
            Frame::SynStream {
                stream_id: 3,
                flags: 0,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            },
            Frame::RstStream {
                stream_id: 1,
                status: RST_CANCEL,
            },
            Frame::Ping { id: 7 },
        ];
        assert_eq!(roundtrip(&frames), frames);
    }

    #[test]
    fn header_lookup_ignores_case_and_data_frames_carry_their_stream() {
        let headers = vec![("streamtype".to_string(), "data".to_string())];
        assert_eq!(header(&headers, "streamType"), Some("data"));
        assert_eq!(header(&headers, "port"), None);
        let mut dec = HeaderDecoder::default();
        let head = [0, 0, 0, 5, FLAG_FIN, 0, 0, 2];
        assert_eq!(
            decode(&head, Bytes::from_static(b"hi"), &mut dec).unwrap(),
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi")
            }
        );
        // A SPDY/2 control frame is refused, not misread.
        let head = [0x80, 2, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            decode(&head, Bytes::new(), &mut dec),
            Err(FrameError::Version(2))
        ));
    }
}
