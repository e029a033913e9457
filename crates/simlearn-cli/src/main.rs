//! `simlearn`: a thin command-line layer over the `simlearn` and `simlearn-eval` crates.

use clap::{Parser, Subcommand};

mod cmd_eval;

/// Deep metric learning to rank: train embeddings and measure retrieval honestly.
#[derive(Parser)]
#[command(name = "simlearn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact retrieval evaluation of an embedding file (R@k, MAP@R, nDCG, …).
    Eval(cmd_eval::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => cmd_eval::run(args),
    };
    if let Err(e) = result {
        // One line, no backtrace: bad input is the user's to fix, not a crash.
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
