//! How close issuing and verifying an EdDSA access token come to the bare Ed25519 operations
//! underneath ("crypto at the floor"), for `scripts/bench`. Criterion measures one function for
//! seconds before the next, so on a shared machine a change of load between the two skews their
//! ratio (medians swung 2× between runs). Here the four operations take turns in short batches,
//! each twice per round in mirrored order (so a drift of the machine's speed within a round
//! weighs on both sides of a ratio alike), and the median of the per-round ratios is reported.
//!
//!   cargo run --release -p token --example floor            # 300 rounds of 100 calls each
//!   cargo run --release -p token --example floor -- 20 10   # rounds, calls per batch
//!
//! Prints one line: `FLOOR_JSON {...}` with the median µs per call of each operation and the
//! medians of the per-round ratios `issue / sign` and `verify / bare verify`.

#[path = "../benches/support/mod.rs"]
mod support;

use std::{hint::black_box, time::Instant};

use ed25519_dalek::{Signer, Verifier as _};
use token::Role;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<usize>()
            .unwrap_or_else(|_| panic!("usage: floor [ROUNDS [CALLS PER BATCH]]; got {a:?}"))
    });
    let rounds = args.next().unwrap_or(300).max(1);
    let batch = args.next().unwrap_or(100).max(1);

    let eddsa = support::EdDsa::new();

    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..batch {
            f();
        }
        started.elapsed().as_secs_f64() * 1e6 / batch as f64
    };
    let ops: [&mut dyn FnMut(); 4] = [
        &mut || {
            black_box(eddsa.raw.sign(black_box(eddsa.signing_input.as_bytes())));
        },
        &mut || {
            black_box(
                eddsa
                    .issuer
                    .issue(black_box("0190c2a4"), "alice", &[Role::User])
                    .expect("issue"),
            );
        },
        &mut || {
            eddsa
                .public
                .verify(black_box(eddsa.signing_input.as_bytes()), &eddsa.signature)
                .expect("valid");
        },
        &mut || {
            black_box(
                eddsa
                    .verifier
                    .verify(black_box(&eddsa.token))
                    .expect("valid"),
            );
        },
    ];
    // Per operation (sign, issue, bare verify, verify), its µs per call in each round.
    let mut per_round: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds + 1 {
        // Each operation twice, in mirrored order (0 1 2 3 3 2 1 0), so that a machine speeding
        // up or slowing down during the round weighs on both sides of each ratio alike.
        let mut us = [0.0; 4];
        for op in [0, 1, 2, 3, 3, 2, 1, 0] {
            us[op] += time(&mut *ops[op]) / 2.0;
        }
        // The first round warms caches and the allocator; it is not counted.
        if round > 0 {
            for (op, value) in us.into_iter().enumerate() {
                per_round[op].push(value);
            }
        }
    }
    let [sign, issue, bare_verify, verify] = per_round;
    let issue_ratio: Vec<f64> = issue.iter().zip(&sign).map(|(i, s)| i / s).collect();
    let verify_ratio: Vec<f64> = verify
        .iter()
        .zip(&bare_verify)
        .map(|(v, b)| v / b)
        .collect();
    println!(
        "FLOOR_JSON {{\"rounds\":{rounds},\"batch\":{batch},\"sign_us\":{:.2},\"issue_us\":{:.2},\
         \"bare_verify_us\":{:.2},\"verify_us\":{:.2},\"issue_ratio\":{:.3},\"verify_ratio\":{:.3}}}",
        median(sign),
        median(issue),
        median(bare_verify),
        median(verify),
        median(issue_ratio),
        median(verify_ratio),
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
