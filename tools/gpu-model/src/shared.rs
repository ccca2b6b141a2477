// SPDX-License-Identifier: MIT OR Apache-2.0

//! State shared by the vfio-user server, the control thread and the signal thread, and the
//! outputs written from it (report, VRAM dump).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::lock;
use crate::gpu::Gpu;
use crate::report::write_json_atomic;

/// State shared by the server, the control thread and the signal thread.
pub struct Shared {
    /// The model.
    pub gpu: Arc<Mutex<Gpu>>,
    /// `--report`.
    pub report: Option<PathBuf>,
    /// `--dump-vram`.
    pub dump: Option<PathBuf>,
    /// Sockets to remove at exit.
    pub sockets: Vec<PathBuf>,
    finished: AtomicBool,
}

impl Shared {
    /// Creates the shared state.
    pub fn new(
        gpu: Arc<Mutex<Gpu>>,
        report: Option<PathBuf>,
        dump: Option<PathBuf>,
        sockets: Vec<PathBuf>,
    ) -> Self {
        Shared {
            gpu,
            report,
            dump,
            sockets,
            finished: AtomicBool::new(false),
        }
    }

    /// Writes the report to `--report`; `Ok(false)` if there is none.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn write_report(&self) -> io::Result<bool> {
        match &self.report {
            Some(p) => self.write_report_to(p).map(|()| true),
            None => Ok(false),
        }
    }

    /// Writes the report to `path`.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn write_report_to(&self, path: &Path) -> io::Result<()> {
        let value = lock(&self.gpu).report();
        write_json_atomic(path, &value)
    }

    /// Writes a VRAM dump to `path`.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn dump_to(&self, path: &Path) -> io::Result<()> {
        let f = std::fs::File::create(path)?;
        let mut w = io::BufWriter::new(f);
        lock(&self.gpu).vram.dump(&mut w)?;
        io::Write::flush(&mut w)
    }

    /// Writes the final outputs and removes the sockets (once).
    pub fn finish(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&self.gpu).end_of_run();
        if let Err(e) = self.write_report() {
            eprintln!("gpu-model: cannot write the report: {e}");
        }
        if let Some(d) = &self.dump {
            if let Err(e) = self.dump_to(d) {
                eprintln!("gpu-model: cannot write the VRAM dump {}: {e}", d.display());
            }
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        let g = lock(&self.gpu);
        let unexpected = g.rec.unexpected();
        if unexpected > 0 {
            eprintln!("gpu-model: {unexpected} unexpected violation(s)");
        }
    }
}
