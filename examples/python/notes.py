"""A Python agent doing what agents do with files, in its zone.

It walks the zone, drafts a JSON index of what it found in a scratch file
(tempfile: unlinked at once, read back while open), keeps the index,
appends to a log, and keeps its notes in SQLite (Python's own sqlite3,
compacted with VACUUM). Build and run:

    nexus build notes.py -o notes.wasm
    nexus run notes.wasm --zone z1 -- "remember the milk"
"""

import json
import os
import sqlite3
import sys
import tempfile
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

    # Drafted in a scratch file that has no name (as on POSIX), then kept.
    with tempfile.TemporaryFile(dir="/notes") as scratch:
        scratch.write(json.dumps({"by": me.principal, "files": found}, indent=1).encode())
        scratch.seek(0)
        draft = scratch.read()
    with open("/notes/index.json", "wb") as f:
        f.write(draft)

    with open("/notes/agent.log", "a") as log:
        log.write(f"{time.time():.0f} {me.principal} noted {note!r}\n")

    db = sqlite3.connect("/notes/notes.db")
    db.execute("create table if not exists notes(at real, text text)")
    with db:
        db.execute("insert into notes values (?, ?)", (time.time(), note))
    (count,) = db.execute("select count(*) from notes").fetchone()
    db.execute("vacuum")
    db.close()

    with open("/notes/index.json") as f:
        index = json.load(f)
    print(f"{me.principal} in zone {me.zone}: {len(index['files'])} files, {count} notes")
    return 0
