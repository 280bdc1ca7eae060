"""netwatch probes: pure measurement — a config goes in, Samples come out."""
