//! The kubelet's certificates from the cluster (`pkg/kubelet/certificate`):
//! TLS bootstrapping of the client certificate with a bootstrap kubeconfig
//! ([`bootstrap`]), the serving certificate of `--port` requested from the
//! `kubernetes.io/kubelet-serving` signer and rotated before it expires
//! ([`serving`]), both through CertificateSigningRequests ([`request`]) and
//! kept as `<cert-dir>/kubelet-{client,server}-current.pem` ([`store`]).

pub mod bootstrap;
pub mod request;
pub mod serving;
pub mod store;

use std::time::Duration;

/// `nextRotationDeadline`: a random moment between 70% and 90% of the
/// certificate's life, so a fleet does not renew at once.
pub fn rotation_deadline(
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
    jitter: f64,
) -> jiff::Timestamp {
    let total = not_after.duration_since(not_before).as_secs_f64().max(0.0);
    let fraction = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
    not_before + jiff::SignedDuration::from_secs_f64(total * fraction)
}

/// How long until `deadline` from `now` (zero once passed).
pub fn wait_until(deadline: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_between_seventy_and_ninety_percent_of_the_life() {
        let nb = jiff::Timestamp::from_second(0).unwrap();
        let na = jiff::Timestamp::from_second(1000).unwrap();
        assert_eq!(rotation_deadline(nb, na, 0.0).as_second(), 700);
        assert_eq!(rotation_deadline(nb, na, 1.0).as_second(), 900);
        assert_eq!(rotation_deadline(nb, na, 0.5).as_second(), 800);
        assert_eq!(wait_until(na, nb), Duration::from_secs(1000));
        assert_eq!(wait_until(nb, na), Duration::ZERO);
    }
}
