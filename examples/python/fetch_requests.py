"""A Python agent using `requests` through the kernel's egress, with the
requests-wasi-http adapter (plain sockets are never an agent's). Build it
with its packages vendored (pure Python, for CPython 3.14):

    pip install --target vendor --only-binary=:all: --platform any \\
        --python-version 3.14 --implementation py requests requests-wasi-http
    nexus build fetch_requests.py --path vendor -o fetch_requests.wasm
    nexus grant --zone z1 agent:fetch_requests fetch host:example.com
    nexus run fetch_requests.wasm --zone z1 -- https://example.com/
"""

import sys

import requests
from wasi_http_adapter import WasiHttpAdapter

import nexus_guest as nexus


@nexus.main
def run() -> int:
    session = requests.Session()
    adapter = WasiHttpAdapter(nexus.wasi_http_bindings())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        r = session.get(sys.argv[1], headers={"x-from": "requests"}, timeout=10)
    except requests.ConnectionError as e:
        print(f"fetch_requests: {e}", file=sys.stderr)
        return 1
    print(r.status_code, r.text.strip())
    return 0 if r.ok else 1
