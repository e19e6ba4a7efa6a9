//! The request handler: cluster names from [`ClusterRecords`] (the newest
//! index, swapped in by the watch), everything else through the upstream
//! resolver.

use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::records::{Answer, ClusterRecords};
use super::upstream::UpstreamResolver;

/// The index the handler answers from; the watch replaces the `Arc`.
pub type SharedRecords = Arc<RwLock<Arc<ClusterRecords>>>;

pub struct ClusterDnsHandler {
    pub records: SharedRecords,
    /// `None`: no upstream (names outside the cluster get SERVFAIL).
    pub upstream: Option<UpstreamResolver>,
}

/// What goes into the response.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl ClusterDnsHandler {
    async fn forward(&self, name: Name, qtype: RecordType) -> Reply {
        let Some(upstream) = &self.upstream else {
            return Reply::code(ResponseCode::ServFail);
        };
        let mut name = name;
        name.set_fqdn(true);
        match upstream.lookup(name.clone(), qtype).await {
            Ok(lookup) => Reply {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: lookup.answers().to_vec(),
                authorities: lookup.authorities().to_vec(),
                additionals: lookup
                    .additionals()
                    .iter()
                    .filter(|r| r.record_type() != RecordType::OPT)
                    .cloned()
                    .collect(),
            },
            Err(e) if e.is_no_records_found() => {
                let code = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let mut reply = Reply::code(code);
                if let Some(soa) = e.into_soa() {
                    reply.authorities.push(soa.into_record_of_rdata());
                }
                reply
            }
            Err(e) => {
                tracing::debug!(%name, %qtype, "forwarding failed: {e}");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }

    async fn answer(&self, name: &Name, qtype: RecordType) -> Reply {
        let records = self
            .records
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let negative = |code| Reply {
            code,
            authoritative: true,
            answers: Vec::new(),
            authorities: vec![records.soa().clone()],
            additionals: Vec::new(),
        };
        match records.resolve(name, qtype) {
            Answer::NotOurs => self.forward(name.clone(), qtype).await,
            Answer::NxDomain => negative(ResponseCode::NXDomain),
            Answer::NoData => negative(ResponseCode::NoError),
            Answer::Records {
                mut answers,
                additionals,
                chase,
            } => {
                if let Some(target) = chase {
                    // An ExternalName: the CNAME, then what its target is.
                    let chased = self.forward(target, qtype).await;
                    answers.extend(chased.answers);
                }
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers,
                    authorities: Vec::new(),
                    additionals,
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let reply = if request.metadata.message_type != MessageType::Query {
            Reply::code(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Reply::code(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Ok(info) => {
                    let name: Name = info.query.name().into();
                    self.answer(&name, info.query.query_type()).await
                }
                Err(_) => Reply::code(ResponseCode::FormErr),
            }
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            std::iter::empty(),
            reply.authorities.iter(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS response: {e}");
                let mut header = hickory_proto::op::Header {
                    metadata: Metadata::response_from_request(&request.metadata),
                    counts: Default::default(),
                };
                header.metadata.response_code = ResponseCode::ServFail;
                header.into()
            }
        }
    }
}
