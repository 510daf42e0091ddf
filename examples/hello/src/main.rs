//! The hello agent: its identity comes from the kernel, its files are its
//! zone's, and `/` is the zone root, not the host's.

use std::fs;

use nexus_guest::exit;

fn main() {
    let me = nexus_guest::whoami();
    println!(
        "hello from {} (pid {}) in zone {}",
        me.principal, me.pid, me.zone
    );
    let note = format!("written by {}\n", me.principal);
    if let Err(e) = fs::create_dir_all("/hello").and_then(|_| fs::write("/hello/note.txt", &note)) {
        eprintln!("cannot write /hello/note.txt: {e}");
        exit(2);
    }
    match fs::read_to_string("/hello/note.txt") {
        Ok(back) if back == note => println!("wrote and read back /hello/note.txt"),
        Ok(other) => {
            eprintln!("read back {other:?}, expected {note:?}");
            exit(3);
        }
        Err(e) => {
            eprintln!("cannot read /hello/note.txt: {e}");
            exit(2);
        }
    }
    println!("my root holds:");
    let mut names: Vec<String> = match fs::read_dir("/") {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            eprintln!("cannot list /: {e}");
            exit(2);
        }
    };
    names.sort();
    for n in names {
        println!("  {n}");
    }
}
