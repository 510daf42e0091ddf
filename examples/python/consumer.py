"""The consumer of `examples/pipeline`, in Python: reads jobs from
/pipes/jobs until every producer has closed, squares each number, writes
/output/results.txt, and reports progress once a second while it waits
(on the pipe and a kernel interval together).

    nexus build consumer.py -o consumer-py.wasm
    nexus run producer.wasm --zone z1 --with consumer-py.wasm -- 1000
"""

import os

import nexus_guest as nexus

PIPE = "/pipes/jobs"


def open_pipe() -> nexus.Pipe:
    """Waits (on kernel timers) for the producer to create the pipe."""
    for _ in range(200):
        try:
            return nexus.Pipe.reader(PIPE)
        except FileNotFoundError:
            nexus.sleep(0.05)
    raise SystemExit(f"consumer: {PIPE} never appeared")


@nexus.main
def run() -> int:
    pipe = open_pipe()
    ticks = nexus.Interval(1.0)
    pending = b""
    report = []
    count = total = 0
    while True:
        chunk = pipe.try_read(64 << 10)
        if chunk is None:
            nexus.poll([pipe.subscribe(), ticks.subscribe()])
            if ticks.take_ticks():
                print(f"consumer: {count} jobs so far")
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            n = int(line.decode().removeprefix("job "))
            count += 1
            total += n * n
            report.append(f"job {n} -> {n * n}\n")
    report.append(f"total: {count} jobs, sum of squares {total}\n")
    os.makedirs("/output", exist_ok=True)
    with open("/output/results.txt", "w") as f:
        f.writelines(report)
    print(f"consumer: {count} jobs, sum of squares {total}")
    return 0
