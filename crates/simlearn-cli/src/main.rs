//! `simlearn`: a thin command-line layer over the `simlearn` and `simlearn-eval` crates.

use clap::{Parser, Subcommand};

mod cmd_calibrate;
mod cmd_demo;
mod cmd_embed;
mod cmd_eval;
mod cmd_index;
mod cmd_loss;
mod cmd_report;
mod cmd_search;
mod cmd_serve;
mod cmd_train;
mod progress;

/// Deep metric learning to rank: train embeddings and measure retrieval honestly.
#[derive(Parser)]
#[command(name = "simlearn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train contextual and contrastive heads on the embedded digits; print retrieval before/after.
    Demo(cmd_demo::Args),
    /// Exact retrieval evaluation of an embedding file (R@k, MAP@R, nDCG, …).
    Eval(cmd_eval::Args),
    /// Embed an image dataset with a pretrained backbone or a fine-tuned run.
    Embed(cmd_embed::Args),
    /// Train an embedding head (or fine-tune a backbone) from a TOML config.
    Train(cmd_train::Args),
    /// Compute a loss, its terms and its gradient on given embeddings.
    Loss(cmd_loss::Args),
    /// Write an HTML report (figures, results with intervals) of trained run folders.
    Report(cmd_report::Args),
    /// Build or extend a persistent embedding index (exact or HNSW).
    Index(cmd_index::Args),
    /// Nearest items of an index to query vectors, item ids or images.
    Search(cmd_search::Args),
    /// Serve an index over HTTP: search API, item images, health, metrics and a web page.
    Serve(cmd_serve::Args),
    /// Calibrate an index's match threshold (F1-optimal or a target precision) from labelled queries.
    Calibrate(cmd_calibrate::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cmd_demo::run(args),
        Command::Eval(args) => cmd_eval::run(args),
        Command::Embed(args) => cmd_embed::run(args),
        Command::Train(args) => cmd_train::run(args),
        Command::Loss(args) => cmd_loss::run(args),
        Command::Report(args) => cmd_report::run(args),
        Command::Index(args) => cmd_index::run(args),
        Command::Search(args) => cmd_search::run(args),
        Command::Serve(args) => cmd_serve::run(args),
        Command::Calibrate(args) => cmd_calibrate::run(args),
    };
    if let Err(e) = result {
        // One line, no backtrace: bad input is the user's to fix, not a crash.
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
