//! `komora`: run the whole stack (`komora up`) or make dev certificates (`komora certs`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = komora_stack::up::Cli::parse();
    match komora_stack::up::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("komora: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
