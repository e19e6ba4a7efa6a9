//! `controller.ComputeHash`: the short, stable name of a pod template that
//! controllers put in labels and names — `pod-template-hash` (Deployment →
//! ReplicaSet) and `controller-revision-hash` (DaemonSet, StatefulSet →
//! ControllerRevision). A 32-bit FNV-1a of the template (here its JSON
//! form; upstream hashes Go's printing of the struct, so the values differ
//! from a real cluster's, never their shape), then the collision count, as
//! decimal digits mapped onto `SafeEncodeString`'s alphabet.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// `rand.SafeEncodeString`'s alphabet: no vowels, no confusable characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(bytes: impl IntoIterator<Item = u8>, mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

/// The hash of `template`; a non-zero `collision_count` (the controller's
/// `status.collisionCount`) gives another name when one is taken.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).expect("PodTemplateSpec serializes");
    let mut hash = fnv1a32(json, FNV_OFFSET);
    if let Some(c) = collision_count {
        hash = fnv1a32((c as u32).to_le_bytes(), hash);
    }
    safe_encode(&hash.to_string())
}

/// `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(app: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                ..Default::default()
            }),
            spec: None,
        }
    }

    #[test]
    fn equal_templates_hash_alike_and_collisions_move_the_hash() {
        let a = compute_hash(&template("web"), None);
        assert_eq!(a, compute_hash(&template("web"), None));
        assert_ne!(a, compute_hash(&template("db"), None));
        assert_ne!(a, compute_hash(&template("web"), Some(1)));
        assert!(a.len() <= 10 && a.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_eq!(
            fnv1a32(*b"a", FNV_OFFSET),
            0xe40c_292c,
            "FNV-1a test vector"
        );
        assert_eq!(safe_encode("0123"), "4567");
    }
}
