//! The fetch agent: fetches a URL through the kernel (`wasi:http`) and
//! writes the body into its zone. It reaches only what its principal was
//! granted:
//!
//! ```text
//! nexus grant --zone z1 agent:fetch fetch host:example.com
//! nexus run fetch.wasm --zone z1 -- https://example.com/ /example.html
//! ```
//!
//! `fetch URL [OUT] [-X METHOD] [-d BODY] [-H 'Name: value']…
//! [--parallel N] [--times N] [--headers]`: without OUT the body goes to
//! stdout; `--parallel N` sends N requests at once and reports each;
//! `--times N` sends N in a row and prints their latency (what `nexus
//! bench` measures); `--headers` prints the response's headers.

use std::time::Instant;

use nexus_guest::http::{Method, Request};

struct Args {
    url: String,
    out: Option<String>,
    method: Method,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    parallel: usize,
    times: usize,
    show_headers: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("fetch: {why}");
    eprintln!("usage: fetch URL [OUT] [-X METHOD] [-d BODY] [-H 'Name: value']… [--parallel N] [--times N] [--headers]");
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        url: String::new(),
        out: None,
        method: Method::Get,
        body: Vec::new(),
        headers: Vec::new(),
        parallel: 0,
        times: 0,
        show_headers: false,
    };
    let mut it = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match arg.as_str() {
            "-X" => {
                a.method = match value("-X").to_ascii_uppercase().as_str() {
                    "GET" => Method::Get,
                    "HEAD" => Method::Head,
                    "POST" => Method::Post,
                    "PUT" => Method::Put,
                    "PATCH" => Method::Patch,
                    "DELETE" => Method::Delete,
                    other => usage(&format!("method {other}")),
                }
            }
            "-d" => a.body = value("-d").into_bytes(),
            "-H" => {
                let h = value("-H");
                let (n, v) = h.split_once(':').unwrap_or_else(|| usage("-H takes 'Name: value'"));
                a.headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            "--parallel" => a.parallel = value("--parallel").parse().unwrap_or_else(|_| usage("--parallel N")),
            "--times" => a.times = value("--times").parse().unwrap_or_else(|_| usage("--times N")),
            "--headers" => a.show_headers = true,
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    a.url = positional.next().unwrap_or_else(|| usage("no URL"));
    a.out = positional.next();
    a
}

fn request(a: &Args) -> Request {
    let mut r = Request::new(a.method.clone(), &a.url).body(a.body.clone());
    for (n, v) in &a.headers {
        r = r.header(n, v.as_bytes());
    }
    r
}

fn main() {
    let a = parse();
    if a.parallel > 0 {
        return parallel(&a);
    }
    if a.times > 0 {
        return latency(&a);
    }
    let r = match request(&a).send() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fetch {}: {e}", a.url);
            std::process::exit(1);
        }
    };
    eprintln!("fetch {}: {} ({} bytes)", a.url, r.status, r.body.len());
    if a.show_headers {
        for (n, v) in &r.headers {
            println!("{n}: {}", String::from_utf8_lossy(v));
        }
    }
    match &a.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &r.body) {
                eprintln!("fetch: cannot write {path}: {e}");
                std::process::exit(1);
            }
        }
        None => print!("{}", r.text()),
    }
    if !(200..300).contains(&r.status) {
        std::process::exit(1);
    }
}

/// N requests in flight at once; each one's outcome, in order.
fn parallel(a: &Args) {
    let started: Vec<_> = (0..a.parallel).map(|_| request(a).start()).collect();
    for (i, s) in started.into_iter().enumerate() {
        match s.and_then(|p| p.wait()) {
            Ok(r) => println!("{i}: {}", r.status),
            Err(e) => println!("{i}: {e}"),
        }
    }
}

/// N requests in a row: their latency's median and 99th percentile.
fn latency(a: &Args) {
    let mut took = Vec::with_capacity(a.times);
    let all = Instant::now();
    for _ in 0..a.times {
        let t = Instant::now();
        match request(a).send() {
            Ok(r) if r.status == 200 => {}
            Ok(r) => usage(&format!("status {}", r.status)),
            Err(e) => {
                eprintln!("fetch {}: {e}", a.url);
                std::process::exit(1);
            }
        }
        took.push(t.elapsed().as_micros() as u64);
    }
    let total = all.elapsed().as_micros() as u64;
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "requests {} total_us {total} p50_us {} p99_us {}",
        took.len(),
        at(0.5),
        at(0.99)
    );
}
