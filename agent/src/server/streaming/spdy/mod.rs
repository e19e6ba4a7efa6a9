//! SPDY/3.1 as Kubernetes' streaming clients speak it (spdystream): the
//! frame format and the server side of a session.

pub mod dictionary;
pub mod frame;
pub mod session;
