"""TCP probe: connect to host:port, optionally over TLS, optionally send and expect a reply."""
