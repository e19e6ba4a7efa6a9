//! The control plane's in-process client and leader election, against a
//! real `Api` on the embedded store: what the scheduler and controllers
//! stand on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api as KubeApi, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use kubelab_apiserver::api::Api;
use kubelab_apiserver::client;
use kubelab_apiserver::leader_election::{LeaderElection, run_as_leader};
use kubelab_apiserver::storage::embedded::EmbeddedStore;

async fn api() -> (Arc<Api>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    let api = Arc::new(Api::new(Arc::new(store), "127.0.0.1:6443".into()));
    api.bootstrap().await.unwrap();
    (api, dir)
}

#[tokio::test]
async fn in_process_client_creates_lists_and_watches() {
    let (api, _dir) = api().await;
    let client = client::in_process(api, "system:kube-controller-manager");
    let cms: KubeApi<ConfigMap> = KubeApi::namespaced(client, "default");
    let mut events = watcher(cms.clone(), Default::default())
        .applied_objects()
        .boxed();
    let cm = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "seen"}, "data": {"k": "v"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the watch delivers the new object")
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("seen"));
    assert_eq!(seen.data.unwrap()["k"], "v");
    let listed = cms.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
}

fn candidate(identity: &str) -> LeaderElection {
    LeaderElection {
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaderElection::new("kube-scheduler")
    }
}

#[tokio::test]
async fn only_one_candidate_leads_and_the_other_takes_over_when_it_stops() {
    let (api, _dir) = api().await;
    let leading = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let work = |leading: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
        move || {
            let (leading, most) = (leading.clone(), most.clone());
            async move {
                let n = leading.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                // Leads until dropped: a scheduler never returns.
                struct Stop(Arc<AtomicUsize>);
                impl Drop for Stop {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _stop = Stop(leading);
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    };
    let client = client::in_process(api.clone(), "system:kube-scheduler");
    let first = tokio::spawn(run_as_leader(
        client.clone(),
        candidate("first"),
        work(leading.clone(), most_at_once.clone()),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn(run_as_leader(
        client.clone(),
        candidate("second"),
        work(leading.clone(), most_at_once.clone()),
    ));
    let leases: KubeApi<Lease> = KubeApi::namespaced(client, "kube-system");
    let holder = |l: Lease| l.spec.unwrap().holder_identity.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(leases.get("kube-scheduler").await.unwrap()), "first");
    assert_eq!(leading.load(Ordering::SeqCst), 1);

    // The leader dies without releasing: the other takes over once the
    // lease has gone unrenewed for its duration.
    first.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lease = leases.get("kube-scheduler").await.unwrap();
        if holder(lease.clone()) == "second" {
            assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second never took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leading.load(Ordering::SeqCst), 1);
    assert_eq!(most_at_once.load(Ordering::SeqCst), 1, "never two leaders");
    second.abort();
}
