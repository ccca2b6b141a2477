// SPDX-License-Identifier: MIT OR Apache-2.0

//! Program flow: set up, serve one vfio-user connection, write the outputs.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::backend::{lock, Backend};
use crate::cli::Options;
use crate::gpu::Gpu;
use crate::report::{fields, Kind};
pub use crate::shared::Shared;

/// Removes a stale socket at `path` and binds a new listener.
///
/// # Errors
///
/// I/O errors; a non-socket file at `path` is left alone and is an error.
pub fn bind_fresh(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    UnixListener::bind(path)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Runs the model; returns the process exit code.
pub fn run(opts: Options) -> i32 {
    let gpu = match Gpu::new(opts.config.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu-model: {e}");
            return 2;
        }
    };
    let chip = gpu.chip;
    let gpu = Arc::new(Mutex::new(gpu));
    let listener = match bind_fresh(&opts.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gpu-model: cannot listen on {}: {e}", opts.socket.display());
            return 1;
        }
    };
    let mut sockets = vec![opts.socket.clone()];
    let control = match &opts.control {
        Some(p) => match bind_fresh(p) {
            Ok(l) => {
                sockets.push(p.clone());
                Some(l)
            }
            Err(e) => {
                eprintln!("gpu-model: cannot listen on {}: {e}", p.display());
                let _ = std::fs::remove_file(&opts.socket);
                return 1;
            }
        },
        None => None,
    };
    let shared = Arc::new(Shared::new(
        Arc::clone(&gpu),
        opts.report.clone(),
        opts.dump_vram.clone(),
        sockets,
    ));
    eprintln!(
        "gpu-model: chip {} ({}, PCI 10de:{:04x}), VRAM {} ({:#x}), BAR1 {}, socket {}",
        chip.name,
        chip.board,
        chip.device_id,
        human(opts.config.vram_bytes),
        opts.config.vram_bytes,
        human(opts.config.bar1_bytes),
        opts.socket.display()
    );
    if opts.signals {
        if let Err(e) = install_signals(Arc::clone(&shared)) {
            eprintln!("gpu-model: cannot install signal handlers: {e}");
        }
    }
    if let Some(l) = control {
        let s = Arc::clone(&shared);
        std::thread::spawn(move || crate::control::run(s, l));
    }
    let code = serve_one(&shared, &listener);
    shared.finish();
    code
}

/// Accepts one connection and serves it; returns the exit code.
pub fn serve_one(shared: &Arc<Shared>, listener: &UnixListener) -> i32 {
    let stream = match listener.accept() {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("gpu-model: accept: {e}");
            return 1;
        }
    };
    let mut backend = Backend::new(Arc::clone(&shared.gpu));
    let gpu = Arc::clone(&shared.gpu);
    let gpu2 = Arc::clone(&shared.gpu);
    let result = crate::protocol::serve(
        stream,
        &mut backend,
        &mut || lock(&gpu).rec.counters.messages += 1,
        &mut |msg| {
            eprintln!("gpu-model: protocol error: {msg}");
            lock(&gpu2).rec.violation(
                Kind::Protocol,
                format!("vfio-user protocol error: {msg}"),
                fields([("message", json!(msg))]),
            );
        },
    );
    match result {
        Ok(()) => {
            eprintln!("gpu-model: client disconnected");
            0
        }
        Err(e) => {
            eprintln!("gpu-model: connection ended: {e}");
            lock(&shared.gpu).rec.violation(
                Kind::Protocol,
                format!("vfio-user connection ended abnormally: {e}"),
                fields([("message", json!(e.to_string()))]),
            );
            1
        }
    }
}

fn install_signals(shared: Arc<Shared>) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGTERM, SIGINT])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGUSR1 {
                match shared.write_report() {
                    Ok(true) => {}
                    Ok(false) => eprintln!("gpu-model: SIGUSR1 but no --report path"),
                    Err(e) => eprintln!("gpu-model: cannot write the report: {e}"),
                }
            } else {
                eprintln!("gpu-model: terminated by signal {sig}");
                shared.finish();
                std::process::exit(0);
            }
        }
    });
    Ok(())
}
