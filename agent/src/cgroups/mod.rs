//! One cgroup driver over v1 and v2, and the QoS maths.
