"""A native Python agent: plain Python, no SDK, its zone as a directory.

Run in a container (isolation level 1) it sees its zone at /mnt/nexus,
which is also its working directory; run as a host process (level 0) its
working directory is the zone. Every file operation goes through the Nexus
kernel as this agent's task, gated and audited. See README.md beside it.
"""

import json
import os
import sqlite3
import sys
import time


def main() -> int:
    note = " ".join(sys.argv[1:]) or "nothing in particular"
    os.makedirs("notes", exist_ok=True)

    # Walk the zone: every file and its size.
    found = {}
    for root, dirs, files in os.walk("."):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            found[path[1:]] = os.stat(path).st_size

    with open("notes/index.json", "w") as f:
        json.dump({"files": found}, f, indent=1)

    with open("notes/agent.log", "a") as log:
        log.write(f"{time.time():.0f} uid {os.getuid()} noted {note!r}\n")

    db = sqlite3.connect("notes/notes.db")
    db.execute("create table if not exists notes(at real, text text)")
    with db:
        db.execute("insert into notes values (?, ?)", (time.time(), note))
    (count,) = db.execute("select count(*) from notes").fetchone()
    db.close()

    with open("notes/index.json") as f:
        index = json.load(f)
    print(f"native agent in {os.getcwd()}: {len(index['files'])} files, {count} notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
