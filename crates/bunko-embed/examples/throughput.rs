#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]
use bunko_embed::{Encoder, Role};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = Encoder::load(std::path::Path::new(&args[0])).expect("load");
    let docs: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&args[1]).unwrap()).unwrap();
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    m.embed(&texts[..8], Role::Passage);
    let t = Instant::now();
    let e = m.embed(&texts, Role::Passage);
    let dt = t.elapsed().as_secs_f64();
    println!(
        "bunko {:.1} docs/s, {} tokens",
        texts.len() as f64 / dt,
        e.tokens.iter().sum::<usize>()
    );
    let out: Vec<Vec<f32>> = (0..texts.len()).map(|i| e.get(i).to_vec()).collect();
    std::fs::write("/tmp/bunko256.json", serde_json::to_string(&out).unwrap()).unwrap();
}
