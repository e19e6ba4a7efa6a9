//! Runs a fuzz target's check, without libFuzzer, over its seed corpus
//! (`fuzz/corpus/<target>`), the crashes kept as regression inputs
//! (`fuzz/regressions/<target>`), and a bounded number of deterministic
//! mutations of each: the part of fuzzing that every `cargo test` runs, on
//! the stable toolchain. `KUBELAB_FUZZ_MUTATIONS` sets the mutations per
//! input (default 300). An input that fails is written to
//! `target/fuzz-failures/<target>/` and named in the panic message; copied
//! into `fuzz/regressions/<target>/`, it is checked in every run after.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `dir`, sorted by name (hidden ones skipped); none if it is absent.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                std::fs::read(e.path()).expect("reading a corpus file"),
            )
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn new(name: &str, round: u64) -> Rng {
        // FNV-1a of the name, then the round: each mutation replays alone.
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng((h ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that change how text formats parse: delimiters, quotes, digits,
/// signs, YAML indicators, the ends of ranges.
const INTERESTING: &[u8] = b"\0\xff\x7f\n\t :-,.{}[]\"'\\/=!~*&|?#%0159eEmKiG+";

/// One to four edits of `seed` (bit flips, interesting bytes, deletions,
/// duplications, insertions, truncation, a splice from `other`).
fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if at < len => {
                let end = (at + 1 + rng.below(16)).min(len);
                data.drain(at..end);
            }
            3 if at < len => {
                let end = (at + 1 + rng.below(64)).min(len);
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
            4 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            5 => data.truncate(at),
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(128)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    data
}

/// Runs `check` on every input and its mutations; panics naming the first
/// input that fails.
pub fn replay(target: &str, check: fn(&[u8])) {
    let seeds = inputs(&repo().join("fuzz/corpus").join(target));
    assert!(!seeds.is_empty(), "no seed corpus for {target}");
    let mut all = seeds.clone();
    all.extend(inputs(&repo().join("fuzz/regressions").join(target)));
    let rounds: u64 = std::env::var("KUBELAB_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let run = |what: String, data: &[u8]| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(data)));
        if outcome.is_err() {
            let dir = repo().join("target/fuzz-failures").join(target);
            std::fs::create_dir_all(&dir).expect("creating target/fuzz-failures");
            let file = dir.join(what.replace('/', "_"));
            std::fs::write(&file, data).expect("writing the failing input");
            panic!(
                "fuzz check {target} failed on {what}; the input is in {} \
                 (`cargo fuzz run {target} {}` replays it)",
                file.display(),
                file.display()
            );
        }
    };
    for (i, (name, data)) in all.iter().enumerate() {
        run(name.clone(), data);
        let other = &seeds[(i + 1) % seeds.len()].1;
        for round in 0..rounds {
            let mut rng = Rng::new(name, round);
            let input = mutate(data, other, &mut rng);
            run(format!("{name}.mutation-{round}"), &input);
        }
    }
}
