//! `certificates.k8s.io/v1` CertificateSigningRequest: validation as
//! `pkg/apis/certificates/validation`, the strategies of the resource and
//! its `/status` and `/approval` subresources (`pkg/registry/certificates`),
//! and the columns `kubectl get csr` prints.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, human_duration, name_col};
use super::validation::{dns1123_label, dns1123_subdomain};
use crate::certificates::{request, signer};
use crate::status::FieldError;

pub const GROUP: &str = "certificates.k8s.io";
pub const APPROVED: &str = "Approved";
pub const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";

/// `allValidUsages`, sorted as Go's `sets.List` prints them.
const VALID_USAGES: [&str; 23] = [
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

const CONDITION_STATUSES: [&str; 3] = ["False", "True", "Unknown"];

/// Whether a condition of `type_` with status True is on the request.
pub fn has_true_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    conditions(csr)
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
}

fn certificate(csr: &CertificateSigningRequest) -> &[u8] {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .map_or(&[], |c| c.0.as_slice())
}

fn of_type<'a>(
    csr: &'a CertificateSigningRequest,
    type_: &str,
) -> Vec<&'a CertificateSigningRequestCondition> {
    conditions(csr)
        .iter()
        .filter(|c| c.type_ == type_)
        .collect()
}

/// `ValidateSignerName`: `<domain with a dot>/<path>`.
pub fn signer_name_errors(field: &str, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(field, "")];
    }
    let segments: Vec<&str> = name.split('/').collect();
    let [domain, path] = segments[..] else {
        return vec![FieldError::invalid(
            field,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut errs = Vec::new();
    if domain.len() > 253 {
        errs.push(too_long(field, 253));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for l in &labels {
        let e = dns1123_label("", l);
        if !e.is_empty() {
            errs.extend(e.into_iter().map(|e| {
                FieldError::invalid(
                    field,
                    domain,
                    format!("validating label {l:?}: {}", e.detail),
                )
            }));
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            field,
            domain,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for l in path.split('.') {
        let e = dns1123_subdomain("", l);
        if !e.is_empty() {
            errs.extend(e.into_iter().map(|e| {
                FieldError::invalid(field, path, format!("validating label {l:?}: {}", e.detail))
            }));
            break;
        }
    }
    let max = 253 + (253 + 63 + 1) + 1;
    if name.len() > max {
        errs.push(too_long(field, max));
    }
    errs
}

fn too_long(field: &str, max: usize) -> FieldError {
    FieldError {
        field: field.into(),
        kind: crate::status::FieldErrorKind::TooLong,
        detail: format!("may not be more than {max} bytes"),
    }
}

/// Go's `%#v` of a byte slice, as `field.Invalid` prints `spec.request`.
fn go_bytes(b: &[u8]) -> String {
    let hex: Vec<String> = b.iter().map(|b| format!("0x{b:x}")).collect();
    format!("[]byte{{{}}}", hex.join(", "))
}

/// What an update may do to the approval conditions and the certificate,
/// which differs per subresource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subresource {
    /// The object itself and `/status`: the signer sets the certificate.
    Status,
    /// `/approval`: approvers add Approved or Denied.
    Approval,
}

/// `validateCertificateSigningRequest` for a new object, or for an update
/// of `old` through `via`.
pub fn validate(
    csr: &CertificateSigningRequest,
    old: Option<&CertificateSigningRequest>,
    via: Subresource,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &csr.spec;
    // Existing data that predates a rule keeps passing it.
    let old_unknown_usages = old.is_some_and(|o| {
        o.spec
            .usages
            .iter()
            .flatten()
            .any(|u| !VALID_USAGES.contains(&u.as_str()))
    });
    if let Err(e) = request::parse(&spec.request.0) {
        errs.push(FieldError::invalid_raw(
            "spec.request",
            go_bytes(&spec.request.0),
            e.to_string(),
        ));
    }
    let usages = spec.usages.as_deref().unwrap_or(&[]);
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", ""));
    }
    if !old_unknown_usages {
        for (i, u) in usages.iter().enumerate() {
            if !VALID_USAGES.contains(&u.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("spec.usages[{i}]"),
                    u,
                    &VALID_USAGES,
                ));
            }
        }
    }
    for (i, u) in usages.iter().enumerate() {
        if usages[..i].contains(u) {
            errs.push(FieldError::duplicate(format!("spec.usages[{i}]"), u));
        }
    }
    let legacy_stored = old.is_some_and(|o| o.spec.signer_name == signer::LEGACY_UNKNOWN);
    if spec.signer_name == signer::LEGACY_UNKNOWN && !legacy_stored {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &spec.signer_name,
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(signer_name_errors("spec.signerName", &spec.signer_name));
    }
    if let Some(secs) = spec.expiration_seconds.filter(|s| *s < 600) {
        errs.push(FieldError::invalid_raw(
            "spec.expirationSeconds",
            secs.to_string(),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs.extend(condition_errors(csr));
    let cert = certificate(csr);
    if old.is_none_or(|o| certificate(o) != cert)
        && let Err(e) = certificate_errors(cert)
    {
        errs.push(FieldError::invalid_raw(
            "status.certificate",
            "\"<certificate data>\"",
            e,
        ));
    }
    if let Some(old) = old {
        errs.extend(update_errors(csr, old, via));
    }
    errs
}

fn condition_errors(csr: &CertificateSigningRequest) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (mut approved, mut denied) = (false, false);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions(csr).iter().enumerate() {
        let field = format!("status.conditions[{i}]");
        if c.type_.is_empty() {
            errs.push(FieldError::required(format!("{field}.type"), ""));
        }
        let status_ok = if matches!(c.type_.as_str(), APPROVED | DENIED | FAILED) {
            c.status == "True"
        } else {
            CONDITION_STATUSES.contains(&c.status.as_str())
        };
        if !status_ok {
            let allowed: &[&str] = if matches!(c.type_.as_str(), APPROVED | DENIED | FAILED) {
                &["True"]
            } else {
                &CONDITION_STATUSES
            };
            errs.push(FieldError::not_supported(
                format!("{field}.status"),
                &c.status,
                allowed,
            ));
        }
        match c.type_.as_str() {
            APPROVED => approved = true,
            DENIED => denied = true,
            _ => {}
        }
        if approved && denied && matches!(c.type_.as_str(), APPROVED | DENIED) {
            errs.push(FieldError::invalid(
                "status.conditions",
                &c.type_,
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        if seen.contains(&c.type_.as_str()) {
            errs.push(FieldError::duplicate(format!("{field}.type"), &c.type_));
        }
        seen.push(&c.type_);
    }
    errs
}

/// `validateCertificate`: empty, or PEM certificates only.
fn certificate_errors(cert: &[u8]) -> Result<(), String> {
    if cert.is_empty() {
        return Ok(());
    }
    let text = std::str::from_utf8(cert)
        .map_err(|_| "must contain at least one CERTIFICATE PEM block".to_owned())?;
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    if blocks.is_empty() {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    for b in &blocks {
        if b.tag() != "CERTIFICATE" {
            return Err(
                "only CERTIFICATE PEM blocks are allowed, found \"".to_owned() + b.tag() + "\"",
            );
        }
        x509_parser::parse_x509_certificate(b.contents()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `validateCertificateSigningRequestUpdate`: what no update may undo, and
/// what only the matching subresource may change.
fn update_errors(
    csr: &CertificateSigningRequest,
    old: &CertificateSigningRequest,
    via: Subresource,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for t in [APPROVED, DENIED, FAILED] {
        if of_type(csr, t).len() < of_type(old, t).len() {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if via != Subresource::Approval {
        for t in [APPROVED, DENIED] {
            let (new, old) = (of_type(csr, t), of_type(old, t));
            if new.len() > old.len() {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not add a condition of type {t:?}"),
                ));
            } else if new.len() == old.len() && new != old {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not modify a condition of type {t:?}"),
                ));
            }
        }
    }
    if certificate(csr) != certificate(old) {
        if via == Subresource::Approval {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not set certificate content",
            ));
        } else if !certificate(old).is_empty() {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    errs
}

/// `populateConditionTimestamps`: new or changed conditions are stamped.
fn stamp_conditions(
    csr: &mut CertificateSigningRequest,
    old: Option<&CertificateSigningRequest>,
    now: jiff::Timestamp,
) {
    let old_conditions: Vec<CertificateSigningRequestCondition> =
        old.map(|o| conditions(o).to_vec()).unwrap_or_default();
    let Some(list) = csr.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
        return;
    };
    for c in list {
        if c.last_update_time.is_none() {
            c.last_update_time = Some(Time(now));
        }
        if c.last_transition_time.is_none() {
            let before = old_conditions.iter().find(|o| o.type_ == c.type_);
            c.last_transition_time = match before {
                Some(o) if o.status == c.status => o.last_transition_time.clone(),
                _ => Some(Time(now)),
            }
            .or(Some(Time(now)));
        }
    }
}

/// The status strategy keeps every Approved and Denied condition as it
/// was (`preserveConditionInstances`); a changed count fails validation.
fn preserve_approval(csr: &mut CertificateSigningRequest, old: &CertificateSigningRequest) {
    for t in [APPROVED, DENIED] {
        let old_ones: Vec<CertificateSigningRequestCondition> =
            of_type(old, t).into_iter().cloned().collect();
        let Some(list) = csr.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
            continue;
        };
        let at: Vec<usize> = (0..list.len()).filter(|i| list[*i].type_ == t).collect();
        if at.len() == old_ones.len() {
            for (i, o) in at.into_iter().zip(old_ones) {
                list[i] = o;
            }
        }
    }
}

/// The `/approval` strategy: only the conditions come from the request.
pub fn approval_update(
    mut csr: CertificateSigningRequest,
    old: &CertificateSigningRequest,
    now: jiff::Timestamp,
) -> CertificateSigningRequest {
    csr.spec = old.spec.clone();
    let conditions = csr.status.take().and_then(|s| s.conditions);
    let mut status = old.status.clone().unwrap_or_default();
    status.conditions = conditions;
    csr.status = Some(status);
    stamp_conditions(&mut csr, Some(old), now);
    csr
}

/// `extractCSRStatus`: what `kubectl get csr` shows as CONDITION.
pub fn condition_summary(csr: &CertificateSigningRequest) -> String {
    let has = |t| conditions(csr).iter().any(|c| c.type_ == t);
    let mut s = if has(DENIED) {
        "Denied"
    } else if has(APPROVED) {
        "Approved"
    } else {
        "Pending"
    }
    .to_owned();
    if has(FAILED) {
        s.push_str(",Failed");
    }
    if !certificate(csr).is_empty() {
        s.push_str(",Issued");
    }
    s
}

impl KindSpec for CertificateSigningRequest {
    const SHORT_NAMES: &'static [&'static str] = &["csr"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["spec.signerName"];

    /// Nobody creates a request approved or issued; who asks is filled in
    /// by the server from the request's user.
    fn prepare_create(&mut self) {
        self.spec.username = None;
        self.spec.uid = None;
        self.spec.groups = None;
        self.spec.extra = None;
        self.status = Some(CertificateSigningRequestStatus::default());
    }

    /// The spec never changes; `/status` keeps the approval as it was.
    fn prepare_update(&mut self, old: &Self) {
        self.spec = old.spec.clone();
        preserve_approval(self, old);
        stamp_conditions(self, Some(old), jiff::Timestamp::now());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        validate(self, old, Subresource::Status)
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            age_col(),
            col("SignerName", "string", 0),
            col("Requestor", "string", 0),
            col("RequestedDuration", "string", 0),
            col("Condition", "string", 0),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            self.spec.signer_name.clone().into(),
            self.spec.username.clone().unwrap_or_default().into(),
            self.spec
                .expiration_seconds
                .map_or("<none>".to_owned(), |s| human_duration(i64::from(s)))
                .into(),
            condition_summary(self).into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::request::tests::request_pem;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(signer: &str, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Default::default(),
            spec: CertificateSigningRequestSpec {
                request: ByteString(request_pem("alice", &[], vec![]).0.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            status: None,
        }
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn condition(type_: &str) -> CertificateSigningRequestCondition {
        CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            ..Default::default()
        }
    }

    fn with_conditions(
        mut c: CertificateSigningRequest,
        types: &[&str],
    ) -> CertificateSigningRequest {
        c.status = Some(CertificateSigningRequestStatus {
            conditions: Some(types.iter().map(|t| condition(t)).collect()),
            certificate: None,
        });
        c
    }

    #[test]
    fn a_good_request_passes() {
        let c = csr(signer::KUBE_APISERVER_CLIENT, &["client auth"]);
        assert_eq!(
            messages(&validate(&c, None, Subresource::Status)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_fields_get_upstreams_messages() {
        let mut c = csr(
            "kubernetes.io/legacy-unknown",
            &["client auth", "bogus", "client auth"],
        );
        c.spec.expiration_seconds = Some(60);
        c.spec.request = ByteString(b"x".to_vec());
        assert_eq!(
            messages(&validate(&c, None, Subresource::Status)),
            vec![
                "spec.request: Invalid value: []byte{0x78}: PEM block type must be CERTIFICATE REQUEST".to_string(),
                format!("spec.usages[1]: Unsupported value: \"bogus\": supported values: {}", VALID_USAGES.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")),
                "spec.usages[2]: Duplicate value: \"client auth\"".into(),
                "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version".into(),
                "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)".into(),
            ]
        );
        let none = csr("", &[]);
        assert_eq!(
            messages(&validate(&none, None, Subresource::Status)),
            vec![
                "spec.usages: Required value",
                "spec.signerName: Required value"
            ]
        );
    }

    #[test]
    fn signer_names_are_a_domain_and_a_path() {
        assert!(signer_name_errors("f", "example.com/my-signer").is_empty());
        assert_eq!(
            messages(&signer_name_errors("f", "nodomain")),
            vec![
                "f: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
            ]
        );
        assert_eq!(
            messages(&signer_name_errors("f", "example/x")),
            vec![
                "f: Invalid value: \"example\": should be a domain with at least two segments separated by dots"
            ]
        );
        assert_eq!(messages(&signer_name_errors("f", "Example.com/x")).len(), 1);
    }

    #[test]
    fn only_approval_adds_approved_and_nothing_removes_it() {
        let pending = csr(signer::KUBE_APISERVER_CLIENT, &["client auth"]);
        let approved = with_conditions(pending.clone(), &[APPROVED]);
        assert!(validate(&approved, Some(&pending), Subresource::Approval).is_empty());
        assert_eq!(
            messages(&validate(&approved, Some(&pending), Subresource::Status)),
            vec![
                "status.conditions: Forbidden: updates may not add a condition of type \"Approved\""
            ]
        );
        assert_eq!(
            messages(&validate(&pending, Some(&approved), Subresource::Approval)),
            vec![
                "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""
            ]
        );
        let both = with_conditions(pending.clone(), &[APPROVED, DENIED]);
        assert_eq!(
            messages(&validate(&both, Some(&pending), Subresource::Approval)),
            vec![
                "status.conditions: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
            ]
        );
    }

    #[test]
    fn status_keeps_approval_and_approval_keeps_the_certificate() {
        let pending = csr(signer::KUBE_APISERVER_CLIENT, &["client auth"]);
        let mut approved = with_conditions(pending.clone(), &[APPROVED]);
        approved
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .message = Some("ok".into());
        let mut edited = approved.clone();
        edited.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message =
            Some("changed".into());
        edited.spec.signer_name = "example.com/other".into();
        edited.prepare_update(&approved);
        assert_eq!(conditions(&edited)[0].message.as_deref(), Some("ok"));
        assert_eq!(edited.spec.signer_name, signer::KUBE_APISERVER_CLIENT);

        let mut request = with_conditions(pending.clone(), &[DENIED]);
        request.status.as_mut().unwrap().certificate = Some(ByteString(b"sneaky".to_vec()));
        let now = jiff::Timestamp::now();
        let denied = approval_update(request, &pending, now);
        assert_eq!(certificate(&denied), b"");
        assert_eq!(conditions(&denied)[0].last_update_time, Some(Time(now)));
        assert_eq!(condition_summary(&denied), "Denied");
    }
}
