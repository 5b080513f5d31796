//! `cargo run -p bunko-embed --example embed --release -- MODEL query|passage TEXT...`
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]
use bunko_embed::{Encoder, Role};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let m = Encoder::load(std::path::Path::new(&args[0])).expect("load");
    eprintln!("load {:?} {}", t.elapsed(), m.fingerprint());
    let role = if args[1] == "query" {
        Role::Query
    } else {
        Role::Passage
    };
    let texts: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let t = Instant::now();
    let e = m.embed(&texts, role);
    eprintln!("embed {:?}", t.elapsed());
    for i in 0..texts.len() {
        println!(
            "{} {:?} {:?}",
            e.tokens[i],
            m.tokenize(texts[i], role),
            &e.get(i)[..6]
        );
    }
}
