"""A Python agent fetching a URL through the kernel and keeping the body
in its zone. It reaches only what it was granted:

    nexus build fetch.py -o fetch.wasm
    nexus grant --zone z1 agent:fetch editor zone
    nexus grant --zone z1 agent:fetch fetch host:example.com
    nexus run fetch.wasm --zone z1 -- https://example.com/ /example.html
"""

import sys

import nexus_guest as nexus


@nexus.main
def run() -> int:
    if len(sys.argv) < 3:
        print("usage: fetch URL PATH", file=sys.stderr)
        return 2
    url, path = sys.argv[1], sys.argv[2]
    try:
        r = nexus.fetch(url, headers=[("accept", "*/*")])
    except PermissionError as e:
        print(f"fetch: {e}", file=sys.stderr)
        return 4
    except nexus.HttpError as e:
        print(f"fetch: {url} failed: {e.code}", file=sys.stderr)
        return 1
    with open(path, "wb") as f:
        f.write(r.body)
    print(f"{r.status} {len(r.body)} bytes from {url} into {path}")
    return 0 if 200 <= r.status < 300 else 1
