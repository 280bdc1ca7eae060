"""ICMP echo probe: loss, round-trip times and jitter to one host."""
