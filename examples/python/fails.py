"""What a Python agent's failures look like under `nexus run` (the tests
run it): `exit N` and `return N` end with status N, `raise` with a
traceback and status 1, `denied` writes where it may only read (the gate
refuses: a `PermissionError`), `sleep S` sleeps on a kernel timer."""

import sys

import nexus_guest as nexus


@nexus.main
def run() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "exit":
        sys.exit(int(sys.argv[2]))
    if what == "return":
        return int(sys.argv[2])
    if what == "raise":
        raise ValueError("the agent gave up")
    if what == "denied":
        # Run with `viewer` only: reading is allowed, writing is not.
        try:
            with open("/plans.txt", "w") as f:
                f.write("overwritten")
        except PermissionError as e:
            print(f"PermissionError: {e}")
            return 3
        return 0
    if what == "sleep":
        start = nexus.now()
        nexus.sleep(float(sys.argv[2]))
        print(f"slept {(nexus.now() - start) / 1e9:.2f} s")
        return 0
    print("usage: fails exit N | return N | raise | denied | sleep S", file=sys.stderr)
    return 2
