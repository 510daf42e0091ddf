"""The SQLite workload of the write-path benchmark (`nexus bench`).

Built with componentize-py against `wasi:cli/command`, so the same
component runs on Nexus and on stock wasmtime-wasi. Argument: a directory.
It writes `DIR/bench.db`, times the whole workload with the guest's own
clock, and writes `total_ns autocommit_ns db_bytes` to `DIR/sqlite.txt`.
"""

import os
import sqlite3
import sys
import time

from wit_world import exports


def workload(path: str) -> tuple[int, int]:
    started = time.monotonic_ns()
    db = sqlite3.connect(path)
    db.execute("create table notes(id integer primary key, topic text, body text, score int)")
    db.execute("create table topics(name text primary key, weight int)")
    with db:
        for i in range(10_000):
            db.execute(
                "insert into notes(topic, body, score) values (?, ?, ?)",
                (f"topic-{i % 97}", f"note {i}: " + "x" * (i % 200), i % 1000),
            )
        db.executemany(
            "insert into topics values (?, ?)", [(f"topic-{t}", t) for t in range(97)]
        )
    db.execute("create index notes_topic on notes(topic)")
    db.execute("create index notes_score on notes(score)")
    rows = db.execute(
        "select t.name, count(*), avg(n.score) from notes n join topics t on n.topic = t.name"
        " group by t.name order by t.weight desc limit 10"
    ).fetchall()
    assert len(rows) == 10, rows
    auto = time.monotonic_ns()
    for i in range(200):
        with db:
            db.execute(
                "insert into notes(topic, body, score) values (?, ?, ?)",
                ("autocommit", f"autocommit {i}", i),
            )
    autocommit = time.monotonic_ns() - auto
    with db:
        db.execute("update notes set score = score + 1 where topic = 'topic-3'")
        db.execute("delete from notes where score < 100")
    db.execute("vacuum")
    (check,) = db.execute("pragma integrity_check").fetchone()
    assert check == "ok", check
    db.close()
    return time.monotonic_ns() - started, autocommit


class Run(exports.Run):
    def run(self) -> None:
        out = sys.argv[1] if len(sys.argv) > 1 else "/"
        db = os.path.join(out, "bench.db")
        total, autocommit = workload(db)
        size = os.stat(db).st_size
        with open(os.path.join(out, "sqlite.txt"), "w") as f:
            f.write(f"{total} {autocommit} {size}\n")
