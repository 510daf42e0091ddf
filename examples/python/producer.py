"""The producer of `examples/pipeline`, in Python: writes N jobs, one line
each, into the pipe /pipes/jobs for the Rust consumer, then syncs.

    nexus build producer.py -o producer-py.wasm
    nexus run producer-py.wasm --zone z1 --with consumer.wasm -- 1000
"""

import os
import sys

import nexus_guest as nexus

PIPE = "/pipes/jobs"


@nexus.main
def run() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    os.makedirs("/pipes", exist_ok=True)
    try:
        nexus.create_pipe(PIPE, 64 << 10)
    except FileExistsError:
        pass  # the consumer's side may have made it
    with nexus.Pipe.writer(PIPE) as out:
        for i in range(1, jobs + 1):
            # One line per write, well under the atomic size: lines from
            # several producers never interleave.
            out.write(f"job {i}\n".encode())
        out.sync()
    print(f"producer: {jobs} jobs written")
    return 0
