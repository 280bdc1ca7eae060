"""netwatch agent: runs probes on a site node and ships their Samples to the centre."""

__version__ = "0.1.0"
