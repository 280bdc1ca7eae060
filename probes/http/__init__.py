"""HTTP probe: status, timing, body checks, certificate expiry and content fingerprint of a URL."""
