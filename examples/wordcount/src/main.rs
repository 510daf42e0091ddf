//! The wordcount agent: reads every `/input/*.txt` of its zone, counts
//! words (whitespace-separated, lower-cased), and writes
//! `/output/counts.json`: `{"files": N, "words": N, "counts": {"word": N, …}}`
//! with words in sorted order.

use std::collections::BTreeMap;
use std::fs;

use nexus_guest::exit;

/// JSON string escaping for the few characters that need it.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let entries = match fs::read_dir("/input") {
        Ok(rd) => rd,
        Err(e) => {
            eprintln!("cannot list /input: {e}");
            exit(2);
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut words = 0u64;
    for name in &names {
        let text = match fs::read_to_string(format!("/input/{name}")) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read /input/{name}: {e}");
                exit(2);
            }
        };
        for w in text.split_whitespace() {
            *counts.entry(w.to_lowercase()).or_default() += 1;
            words += 1;
        }
    }
    let body: Vec<String> = counts
        .iter()
        .map(|(w, n)| format!("{}: {n}", json_str(w)))
        .collect();
    let json = format!(
        "{{\"files\": {}, \"words\": {words}, \"counts\": {{{}}}}}\n",
        names.len(),
        body.join(", ")
    );
    if let Err(e) =
        fs::create_dir_all("/output").and_then(|_| fs::write("/output/counts.json", json))
    {
        eprintln!("cannot write /output/counts.json: {e}");
        exit(2);
    }
    println!("counted {words} words in {} files", names.len());
}
