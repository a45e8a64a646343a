//! The `komora-origin` binary: everything lives in the library (`komora_origin::cli`).

fn main() -> std::process::ExitCode {
    komora_origin::cli::main()
}
