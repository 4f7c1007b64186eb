"""accelsim's workloads: the network zoo, synthetic sparse workloads (and later the SWAT trainer)."""
