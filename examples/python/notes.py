"""A Python agent doing what agents do with files, in its zone.

It walks the zone, keeps a JSON index of what it found, appends to a log,
and keeps its notes in SQLite (Python's own sqlite3). Build and run:

    nexus build notes.py -o notes.wasm
    nexus run notes.wasm --zone z1 -- "remember the milk"
"""

import json
import os
import sqlite3
import sys
import time

import nexus_guest as nexus


@nexus.main
def run() -> int:
    me = nexus.whoami()
    note = " ".join(sys.argv[1:]) or "nothing in particular"
    os.makedirs("/notes", exist_ok=True)

    # Walk the zone: every file and its size.
    found = {}
    for root, dirs, files in os.walk("/"):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            found[path] = os.stat(path).st_size

    with open("/notes/index.json", "w") as f:
        json.dump({"by": me.principal, "files": found}, f, indent=1)

    with open("/notes/agent.log", "a") as log:
        log.write(f"{time.time():.0f} {me.principal} noted {note!r}\n")

    db = sqlite3.connect("/notes/notes.db")
    db.execute("create table if not exists notes(at real, text text)")
    with db:
        db.execute("insert into notes values (?, ?)", (time.time(), note))
    (count,) = db.execute("select count(*) from notes").fetchone()
    db.close()

    with open("/notes/index.json") as f:
        index = json.load(f)
    print(f"{me.principal} in zone {me.zone}: {len(index['files'])} files, {count} notes")
    return 0
