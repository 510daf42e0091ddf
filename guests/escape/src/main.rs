//! Tries to escape its sandbox in the way its first argument names, and
//! prints one line per attempt: `ATTEMPT: OUTCOME`. The end-to-end escape
//! suite runs it under `nexus run` and checks every outcome.

use std::fs;
use std::io::Read;

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    match case.as_str() {
        "paths" => {
            for p in [
                "../../../../etc/passwd",
                "/etc/passwd",
                "/proc/self/environ",
                "/../../root",
                "../..",
            ] {
                println!("read {p}: {}", outcome(fs::read(p)));
            }
            // `..` may not climb above the directory a path is resolved
            // from, the preopen `/` included.
            let listed = fs::read_dir("/../../..").map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            match listed {
                Ok(names) => println!("list /../../..: {names}"),
                Err(e) => println!("list /../../..: {:?}", e.kind()),
            }
            let long = format!("/{}", "a/".repeat(3000));
            println!("read long path: {}", outcome(fs::read(&long)));
            let long_name = format!("/{}", "n".repeat(300));
            println!("create long name: {}", outcome(fs::write(&long_name, b"x")));
            use nexus_guest::raw::wasi::filesystem::preopens;
            let (root, _) = preopens::get_directories()
                .into_iter()
                .next()
                .expect("a preopen");
            match root.symlink_at("/etc/passwd", "link") {
                Ok(()) => println!("symlink: ok"),
                Err(e) => println!("symlink: {e:?}"),
            }
            // A relative link climbing out: made, but followed inside the
            // zone only.
            match root.symlink_at("../../../../etc/passwd", "climb") {
                Ok(()) => println!("symlink climbing: ok"),
                Err(e) => println!("symlink climbing: {e:?}"),
            }
            println!("read through climb: {}", outcome(fs::read("/climb")));
            println!(
                "hard link: {}",
                outcome(fs::hard_link("/secret.txt", "/hard"))
            );
            use nexus_guest::raw::wasi::filesystem::types::{
                DescriptorFlags as D, OpenFlags as O, PathFlags,
            };
            let open = |name: &str, o: O, d: D| match root.open_at(PathFlags::empty(), name, o, d) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            };
            println!(
                "open directory|create: {}",
                open("newdir", O::DIRECTORY | O::CREATE, D::READ)
            );
            println!("open empty path: {}", open("", O::empty(), D::READ));
            match root.stat_at(PathFlags::empty(), "") {
                Ok(_) => println!("stat empty path: ok"),
                Err(e) => println!("stat empty path: {e:?}"),
            }
            match root.get_flags() {
                Ok(f) => println!("root flags: {f:?}"),
                Err(e) => println!("root flags: {e:?}"),
            }
            println!(
                "open with sync: {}",
                open(
                    "synced",
                    O::CREATE,
                    D::READ | D::WRITE | D::FILE_INTEGRITY_SYNC
                )
            );
        }
        "pipebomb" => {
            // Pipe rings live in the host's memory: as many 16 MiB pipes as
            // the agent can hold ends of, each filled.
            let mut held = Vec::new();
            let outcome = loop {
                let path = format!("/bomb{}", held.len());
                if let Err(e) = nexus_guest::pipe::create(&path, 16 << 20) {
                    break format!("create: {:?}", e.0);
                }
                match nexus_guest::pipe::Pipe::writer(&path) {
                    Ok(w) => {
                        let _ = w.try_write(&vec![9u8; 1 << 20]);
                        held.push(w);
                    }
                    Err(e) => break format!("{:?}", e.0),
                }
                if held.len() >= 64 {
                    break "no limit".into();
                }
            };
            println!("pipes held: {}", held.len());
            println!("then: {outcome}");
        }
        "fieldsbomb" => {
            // Header fields live in the host's memory: as many 16 MiB
            // field lists as the host will keep (96 would be 1.5 GiB).
            use nexus_guest::raw::wasi::http::types;
            let mut held = Vec::new();
            for i in 0..96 {
                let value = vec![b'x'; 16 << 20];
                let f = types::Fields::from_list(&[(format!("x-bomb-{i}"), value)])
                    .expect("a valid header");
                held.push(f);
                println!("fields held: {}", held.len());
            }
            println!("no limit");
        }
        "dirbomb" => {
            // Each open directory stream may hold a page of names.
            for i in 0..300 {
                fs::create_dir_all(format!("/d/entry-{i:0>200}")).expect("a writable zone");
            }
            let mut held = Vec::new();
            let err = loop {
                match fs::read_dir("/d") {
                    Ok(mut rd) => {
                        let _ = rd.next();
                        held.push(rd);
                    }
                    Err(e) => break format!("{:?}", e.kind()),
                }
                if held.len() >= 100_000 {
                    break "no limit".into();
                }
            };
            println!("listings held: {} then {err}", held.len());
        }
        "streambomb" => {
            // Each file stream reads ahead into the host's memory: as many
            // streams on one file as the host will fill.
            use nexus_guest::raw::wasi::filesystem::{preopens, types};
            use nexus_guest::raw::wasi::io::streams;
            fs::write("/big", vec![5u8; 4 << 20]).expect("a writable zone");
            let (root, _) = preopens::get_directories()
                .into_iter()
                .next()
                .expect("a preopened root");
            let mut held = Vec::new();
            let outcome = loop {
                let opened = root.open_at(
                    types::PathFlags::empty(),
                    "big",
                    types::OpenFlags::empty(),
                    types::DescriptorFlags::READ,
                );
                let file = match opened {
                    Ok(file) => file,
                    Err(e) => break format!("open: {e:?}"),
                };
                let stream = file.read_via_stream(0).expect("a stream");
                match stream.blocking_read(1) {
                    Ok(_) => held.push((stream, file)),
                    Err(streams::StreamError::LastOperationFailed(e)) => break e.to_debug_string(),
                    Err(e) => break format!("{e:?}"),
                }
                if held.len() >= 2048 {
                    break "no limit".into();
                }
            };
            println!("streams held: {} then {outcome}", held.len());
        }
        "fill" => {
            // Writes until the zone refuses more: through std (a stream,
            // whose failure wasi-libc reports as EIO whatever its code),
            // then with the descriptor's own write, which carries the code.
            use std::io::Write;
            let mut f = fs::File::create("/fill.bin").expect("a writable zone");
            let block = vec![3u8; 64 << 10];
            let mut written = 0u64;
            let err = loop {
                match f.write_all(&block) {
                    Ok(()) => written += block.len() as u64,
                    Err(e) => break format!("{:?}", e.kind()),
                }
                if written > 1 << 30 {
                    break "no limit".into();
                }
            };
            println!("filled: {written} then {err}");
            use nexus_guest::raw::wasi::filesystem::preopens;
            use nexus_guest::raw::wasi::filesystem::types::{
                DescriptorFlags as D, OpenFlags as O, PathFlags,
            };
            let (root, _) = preopens::get_directories()
                .into_iter()
                .next()
                .expect("a preopen");
            let fd = root
                .open_at(PathFlags::empty(), "fill.bin", O::empty(), D::WRITE)
                .expect("open for writing");
            match fd.write(&block, written) {
                Ok(n) => println!("descriptor write: wrote {n}"),
                Err(e) => println!("descriptor write: {e:?}"),
            }
            println!("mkdir: {}", outcome(fs::create_dir("/one-more")));
        }
        "names" => {
            // Names that would drive a terminal if printed raw.
            for name in ["/a\nb", "/\x1b]0;pwned\x07", "/evil\u{202e}txt.exe"] {
                println!("create {name:?}: {}", outcome(fs::write(name, b"x")));
            }
        }
        "net" => {
            println!(
                "tcp connect: {}",
                outcome(std::net::TcpStream::connect("127.0.0.1:22"))
            );
            println!(
                "tcp bind: {}",
                outcome(std::net::TcpListener::bind("0.0.0.0:8080"))
            );
            println!(
                "udp bind: {}",
                outcome(std::net::UdpSocket::bind("0.0.0.0:5353"))
            );
            use std::net::ToSocketAddrs;
            println!("resolve: {}", outcome("localhost:80".to_socket_addrs()));
            use nexus_guest::raw::wasi::http::{outgoing_handler, types};
            let req = types::OutgoingRequest::new(types::Fields::new());
            req.set_authority(Some("example.com")).expect("authority");
            match outgoing_handler::handle(req, None) {
                Ok(_) => println!("http: ok"),
                Err(e) => println!("http: {e:?}"),
            }
        }
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            println!("env: {}", vars.join(","));
            let args: Vec<String> = std::env::args().skip(1).collect();
            println!("args: {}", args.join(","));
        }
        "fds" => {
            fs::write("/fd.txt", b"x").expect("a writable zone");
            let mut open = Vec::new();
            let err = loop {
                match fs::File::open("/fd.txt") {
                    Ok(f) => open.push(f),
                    Err(e) => break e,
                }
                if open.len() > 100_000 {
                    break std::io::Error::other("no limit");
                }
            };
            println!("fds: {} then {:?}", open.len(), err.kind());
            drop(open);
            println!("after closing: {}", outcome(fs::File::open("/fd.txt")));
        }
        "bigread" => {
            fs::write("/big.bin", vec![7u8; 20 << 20]).expect("a writable zone");
            let mut f = fs::File::open("/big.bin").expect("open");
            let mut small = [0u8; 16];
            println!("std read: {}", outcome(f.read(&mut small)));
            // One descriptor.read asking for 1 GiB: the kernel returns at most
            // its per-call bound, and the host allocates no more.
            use nexus_guest::raw::wasi::filesystem::{preopens, types};
            let (root, _) = preopens::get_directories()
                .into_iter()
                .next()
                .expect("a preopen");
            let d = root
                .open_at(
                    types::PathFlags::empty(),
                    "big.bin",
                    types::OpenFlags::empty(),
                    types::DescriptorFlags::READ,
                )
                .expect("open big.bin");
            match d.read(1 << 30, 0) {
                Ok((bytes, eof)) => println!("read 1 GiB: got {} bytes, eof {eof}", bytes.len()),
                Err(e) => println!("read 1 GiB: {e:?}"),
            }
        }
        "loop" => {
            println!("spinning");
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "membomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                println!("holding {} MiB", hoard.len() * 16);
            }
        }
        other => {
            eprintln!("unknown case {other:?}");
            nexus_guest::exit(64);
        }
    }
}
