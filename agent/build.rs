//! Links `kubelab-agent` at a fixed address (a position-dependent executable).
//!
//! Every container has a shim and every pod a sandbox, each a copy of this
//! binary that lives as long as the container. In a position-independent
//! executable the loader relocates `.data.rel.ro` and the GOT at start, so
//! those pages (about a megabyte here) become private to every process; linked
//! at a fixed address they stay clean pages of the file, shared by all copies.
//! Debian builds runc the same way. Shared libraries, heap, stacks and mmaps
//! stay randomized; only the executable's own load address is fixed.
fn main() {
    println!("cargo:rustc-link-arg-bin=kubelab-agent=-no-pie");
}
