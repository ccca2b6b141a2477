// SPDX-License-Identifier: MIT OR Apache-2.0

//! `gpu-model` command: see `Documentation/gpu/nova-mm/gpu-model.rst`.

use gpu_model::cli::{self, Command, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Run(opts)) => std::process::exit(gpu_model::app::run(*opts)),
        Ok(Command::Walk(opts)) => std::process::exit(gpu_model::walk::run(&opts)),
        Ok(Command::Help) => println!("{USAGE}"),
        Ok(Command::Version) => println!("gpu-model {}", env!("CARGO_PKG_VERSION")),
        Err(e) => {
            eprintln!("gpu-model: {e}");
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
