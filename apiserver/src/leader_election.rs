//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it, so that of several schedulers or controller
//! managers sharing one cluster (two apiservers on one etcd) only one acts.
//!
//! A candidate takes the lease when it is free or when its holder has not
//! renewed it for `lease_duration`, as *observed locally* (client-go does
//! not trust the holder's clock: expiry is measured from the moment this
//! candidate last saw the record change). The leader renews every
//! `retry_period`; if no renewal succeeds within `renew_deadline` it stops
//! its work and contends again. Every write is conditional on the
//! resourceVersion read, so two candidates never both win.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// client-go's defaults (kube-scheduler's and kube-controller-manager's
/// `--leader-elect-lease-duration`, `-renew-deadline`, `-retry-period`).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// `--leader-elect-resource-name`, e.g. `kube-scheduler`.
    pub lease_name: String,
    /// `--leader-elect-resource-namespace`.
    pub namespace: String,
    /// This candidate's name in `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// A candidate for the lease `kube-system/<lease_name>` with client-go's
    /// timings and an identity of `<hostname>_<uuid>`, as kube-scheduler
    /// makes it.
    pub fn new(lease_name: &str) -> Self {
        Self {
            lease_name: lease_name.to_owned(),
            namespace: "kube-system".to_owned(),
            identity: default_identity(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// What a candidate decides from the lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ours already: renew it.
    Renew,
    /// Free or expired: take it (a new term, `leaseTransitions` + 1).
    Acquire,
    /// Someone else holds it and renewed it recently enough.
    HeldByOther,
}

/// The pure half of one election round: `observed_for` is how long the
/// lease record has stayed unchanged from this candidate's point of view.
pub fn decide(spec: &LeaseSpec, identity: &str, observed_for: Duration) -> Verdict {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Verdict::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(LEASE_DURATION);
    if holder.is_empty() || observed_for > duration {
        Verdict::Acquire
    } else {
        Verdict::HeldByOther
    }
}

/// The lease record as last seen, and when it was first seen so.
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Instant,
}

impl Observed {
    fn see(&mut self, spec: &LeaseSpec) {
        let record = Some((spec.holder_identity.clone(), spec.renew_time.clone()));
        if record != self.record {
            self.record = record;
            self.since = Instant::now();
        }
    }
}

struct Elector {
    leases: Api<Lease>,
    cfg: LeaderElection,
    observed: Observed,
}

impl Elector {
    /// One round: true if this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = self.cfg.lease_duration.as_secs() as i32;
        let Some(mut lease) = self.leases.get_opt(&self.cfg.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.lease_name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        self.observed.see(&spec);
        match decide(&spec, &self.cfg.identity, self.observed.since.elapsed()) {
            Verdict::HeldByOther => {
                lease.spec = Some(spec);
                return Ok(false);
            }
            Verdict::Renew => {}
            Verdict::Acquire => {
                spec.holder_identity = Some(self.cfg.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        // Conditional on the resourceVersion just read: a rival's write in
        // between makes this a 409, and the rival wins.
        match self
            .leases
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(stored) => {
                if let Some(spec) = &stored.spec {
                    self.observed.see(spec);
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Contends until this candidate holds the lease.
    async fn acquire(&mut self) {
        let mut waiting_logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) if !waiting_logged => {
                    tracing::info!(
                        lease = %format!("{}/{}", self.cfg.namespace, self.cfg.lease_name),
                        identity = %self.cfg.identity,
                        "attempting to acquire leader lease"
                    );
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    lease = %self.cfg.lease_name,
                    "error retrieving resource lock: {e}"
                ),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews every retry period; returns when a renewal has not succeeded
    /// within the renew deadline (the lease is lost).
    async fn keep_renewing(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(lease = %self.cfg.lease_name, "renewing the lease: {e}"),
            }
            if last_renewed.elapsed() > self.cfg.renew_deadline {
                return;
            }
        }
    }
}

/// Runs `work` whenever this candidate leads: contends for the lease, runs
/// `work` while renewing it, drops `work` when the lease is lost and
/// contends again. Returns only when `work` itself returns.
pub async fn run_as_leader<F, Fut>(
    client: kube::Client,
    cfg: LeaderElection,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut elector = Elector {
        leases: Api::namespaced(client, &cfg.namespace),
        observed: Observed {
            record: None,
            since: Instant::now(),
        },
        cfg,
    };
    loop {
        elector.acquire().await;
        tracing::info!(
            lease = %format!("{}/{}", elector.cfg.namespace, elector.cfg.lease_name),
            identity = %elector.cfg.identity,
            "successfully acquired lease"
        );
        tokio::select! {
            r = work() => return r,
            _ = elector.keep_renewing() => {
                tracing::error!(
                    lease = %elector.cfg.lease_name,
                    identity = %elector.cfg.identity,
                    "leaderelection lost"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_free_lease_is_taken() {
        assert_eq!(
            decide(&spec(None, 15), "me", Duration::ZERO),
            Verdict::Acquire
        );
        assert_eq!(
            decide(&spec(Some(""), 15), "me", Duration::ZERO),
            Verdict::Acquire
        );
    }

    #[test]
    fn a_fresh_lease_of_another_is_respected_until_it_expires() {
        let s = spec(Some("other"), 15);
        assert_eq!(
            decide(&s, "me", Duration::from_secs(14)),
            Verdict::HeldByOther
        );
        assert_eq!(decide(&s, "me", Duration::from_secs(16)), Verdict::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(
            decide(&spec(Some("me"), 15), "me", Duration::from_secs(100)),
            Verdict::Renew
        );
    }
}
