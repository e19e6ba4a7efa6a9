//! The `kubelab-bridge` CNI plugin binary.
fn main() {
    kubelab_cni::skel::run(&kubelab_cni::bridge::Bridge)
}
