//! Pod sources: static manifests from a directory.
