"""What every engine shares: the interface, the sequence table and block pool, sampling, text streams, snapshot
rules."""
