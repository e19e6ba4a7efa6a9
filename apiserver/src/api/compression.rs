//! gzip of large responses for clients that send `Accept-Encoding: gzip`,
//! as kube-apiserver does (`APIResponseCompression`): only a body known to
//! be larger than 128 KiB is compressed, at the fastest level, with
//! `Vary: Accept-Encoding`. Streams (watches, logs, exec) have no known
//! size and pass through untouched, so they keep streaming.

use axum::body::HttpBody;
use axum::http::Response;
use tower_http::CompressionLevel;
use tower_http::compression::{CompressionLayer, Predicate};

/// kube-apiserver's `defaultGzipThresholdBytes`.
pub const GZIP_THRESHOLD_BYTES: u64 = 128 * 1024;

/// Compress only complete bodies over the threshold.
#[derive(Debug, Clone, Copy)]
pub struct LargeCompleteBodies;

impl Predicate for LargeCompleteBodies {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: HttpBody,
    {
        response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n > GZIP_THRESHOLD_BYTES)
    }
}

pub fn layer() -> CompressionLayer<LargeCompleteBodies> {
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(LargeCompleteBodies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn only_complete_bodies_over_the_threshold_are_compressed() {
        let big = Response::new(Body::from(vec![b'a'; 200 * 1024]));
        let small = Response::new(Body::from(vec![b'a'; 1024]));
        let stream = Response::new(Body::from_stream(futures::stream::iter([Ok::<
            _,
            std::io::Error,
        >(
            vec![b'a'; 200 * 1024],
        )])));
        assert!(LargeCompleteBodies.should_compress(&big));
        assert!(!LargeCompleteBodies.should_compress(&small));
        assert!(!LargeCompleteBodies.should_compress(&stream));
    }
}
