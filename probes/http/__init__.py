"""HTTP probe: status, timing, body checks, certificate expiry and content fingerprint of a URL."""

import sys

# httpx's __init__ imports its command-line tool (click, rich, pygments: about 6 MB of RSS) whenever
# those are installed, as they are beside typer; a probe never runs it, so that import is turned off
# (httpx then offers a stub ``httpx.main`` that says to install httpx[cli]).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
