// SPDX-License-Identifier: MIT OR Apache-2.0

//! `gpu-model` command: see `Documentation/gpu/nova-mm/gpu-model.rst`.

use gpu_model::cli::{self, Command, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Run(opts)) => std::process::exit(gpu_model::app::run(*opts)),
        Ok(Command::Walk(opts)) => std::process::exit(gpu_model::walk::run(&opts)),
        Ok(Command::Chips { json: true }) => println!("{}", gpu_model::chip::Chip::table_json()),
        Ok(Command::Chips { json: false }) => {
            for c in &gpu_model::chip::CHIPS {
                println!(
                    "{} {:#x} {} {} {} {}",
                    c.name,
                    c.chipset(),
                    c.architecture_name(),
                    if c.mmu == gpu_model::chip::MmuVersion::V2 {
                        2
                    } else {
                        3
                    },
                    c.default_vram >> 30,
                    c.board
                );
            }
        }
        Ok(Command::Help) => println!("{USAGE}"),
        Ok(Command::Version) => println!("gpu-model {}", env!("CARGO_PKG_VERSION")),
        Err(e) => {
            eprintln!("gpu-model: {e}");
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
