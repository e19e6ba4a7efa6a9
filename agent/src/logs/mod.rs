//! CRI-format container logs.
