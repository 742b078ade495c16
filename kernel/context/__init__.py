"""Context switching: KV snapshots of preempted requests and agents' retained contexts in a shared-memory arena."""
