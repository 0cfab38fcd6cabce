//! One test per contract under `contracts/`, named by the contract id; a test
//! fails with the check's message. `cargo test --test contracts -- --list`
//! lists them.

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};
use parity::harness::{contract::Contract, discover, run_contract};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
    let files = discover(&[root]).expect("contracts/ holds at least one contract");
    let trials = files
        .into_iter()
        .map(|file| {
            // The id names the test; an unparsable file is a test named by its path that fails.
            let name = Contract::load(&file).map(|c| c.id).unwrap_or_else(|_| file.display().to_string());
            Trial::test(name, move || {
                let r = run_contract(&file);
                if r.verdict.holds() {
                    Ok(())
                } else {
                    Err(Failed::from(format!("{} [{}]\n{}", file.display(), r.verdict.label(), r.message)))
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
