//! The kubelet's certificate file store: each certificate and its key in
//! one PEM file `<cert-dir>/<pair>-<YYYY-MM-DD-HH-MM-SS>.pem`, and
//! `<pair>-current.pem` a symlink to the one in use, switched atomically.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

/// A certificate and the key it certifies.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
}

/// The file a new pair named `pair` (`kubelet-client`) issued at `now` goes to.
pub fn file_name(pair: &str, now: jiff::Timestamp) -> String {
    format!("{pair}-{}.pem", now.strftime("%Y-%m-%d-%H-%M-%S"))
}

pub fn current(cert_dir: &Path, pair: &str) -> PathBuf {
    cert_dir.join(format!("{pair}-current.pem"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The validity of the first certificate in `pem`.
pub fn validity(pem_text: &str) -> Result<(jiff::Timestamp, jiff::Timestamp), String> {
    let block = pem::parse_many(pem_text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or("no certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(block.contents()).map_err(|e| e.to_string())?;
    let v = cert.validity();
    let t = |s: i64| jiff::Timestamp::from_second(s).map_err(|e| e.to_string());
    Ok((t(v.not_before.timestamp())?, t(v.not_after.timestamp())?))
}

/// The pair `<pair>-current.pem` holds, if there is one.
pub fn load(cert_dir: &Path, pair: &str) -> Result<Option<Pair>, StoreError> {
    let path = current(cert_dir, pair);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let invalid = |why: String| StoreError::Invalid {
        path: path.clone(),
        why,
    };
    let blocks = pem::parse_many(&text).map_err(|e| invalid(e.to_string()))?;
    let pick = |want: fn(&str) -> bool| -> String {
        blocks
            .iter()
            .filter(|b| want(b.tag()))
            .map(|b| {
                pem::encode_config(
                    b,
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect()
    };
    let cert_pem = pick(|t| t == "CERTIFICATE");
    let key_pem = pick(|t| t.ends_with("PRIVATE KEY"));
    if cert_pem.is_empty() || key_pem.is_empty() {
        return Err(invalid(
            "needs a CERTIFICATE and a PRIVATE KEY block".into(),
        ));
    }
    let (not_before, not_after) = validity(&cert_pem).map_err(invalid)?;
    Ok(Some(Pair {
        cert_pem,
        key_pem,
        not_before,
        not_after,
    }))
}

/// Writes `pair` as a new file and points `<pair>-current.pem` at it.
pub fn save(
    cert_dir: &Path,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
    now: jiff::Timestamp,
) -> Result<PathBuf, StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(cert_dir).map_err(io(cert_dir))?;
    let file = cert_dir.join(file_name(name, now));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .map_err(io(&file))?;
    f.write_all(cert_pem.as_bytes()).map_err(io(&file))?;
    f.write_all(key_pem.as_bytes()).map_err(io(&file))?;
    f.sync_all().map_err(io(&file))?;
    let link = current(cert_dir, name);
    let tmp = cert_dir.join(format!(".{name}-current.pem.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(file.file_name().expect("a file name"), &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(io(&link))?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_the_time_and_current_follows_the_newest() {
        let now: jiff::Timestamp = "2026-12-06T21:50:07Z".parse().unwrap();
        assert_eq!(
            file_name("kubelet-client", now),
            "kubelet-client-2026-12-06-21-50-07.pem"
        );
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["n1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        save(
            dir.path(),
            "kubelet-server",
            &cert.pem(),
            &key.serialize_pem(),
            now,
        )
        .unwrap();
        let later: jiff::Timestamp = "2026-12-06T22:00:00Z".parse().unwrap();
        save(
            dir.path(),
            "kubelet-server",
            &cert.pem(),
            &key.serialize_pem(),
            later,
        )
        .unwrap();
        let link = std::fs::read_link(current(dir.path(), "kubelet-server")).unwrap();
        assert_eq!(link, Path::new("kubelet-server-2026-12-06-22-00-00.pem"));
        let pair = load(dir.path(), "kubelet-server").unwrap().unwrap();
        assert_eq!(pair.key_pem.trim(), key.serialize_pem().trim());
        assert!(load(dir.path(), "kubelet-client").unwrap().is_none());
    }
}
