//! The `kubelab-host-local` IPAM plugin binary.
fn main() {
    kubelab_cni::skel::run(&kubelab_cni::ipam::HostLocal)
}
