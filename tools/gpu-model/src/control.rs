// SPDX-License-Identifier: MIT OR Apache-2.0

//! The control channel: a Unix-socket line protocol.
//!
//! One command per line; one reply line per command, `ok` or `error: <why>`:
//!
//! - `report` — write the report to the `--report` path now; `report <file>`
//!   writes it to `<file>` instead.
//! - `dump <file>` — write a VRAM dump (format in [`crate::vram::Vram::dump`]).
//! - `expect <kind>` — declare a violation kind expected (also retroactively).
//! - `status` — `ok unexpected=<n> violations=<n> accesses=<n>`.
//! - `quit` — reply `ok`, write the report (and `--dump-vram`), exit 0.
//!
//! Connections are served one after another; each may send many commands.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use crate::backend::lock;
use crate::report::Kind;
use crate::shared::Shared;

/// What the caller should do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// Finish and exit.
    Quit,
}

/// Executes one command line and returns the reply line.
pub fn execute(shared: &Shared, line: &str) -> (String, After) {
    let line = line.trim();
    let (cmd, arg) = match line.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (line, ""),
    };
    let reply = match (cmd, arg) {
        ("report", "") => match shared.write_report() {
            Ok(true) => "ok".to_string(),
            Ok(false) => "error: no --report path; use `report <file>`".to_string(),
            Err(e) => format!("error: {e}"),
        },
        ("report", path) => match shared.write_report_to(Path::new(path)) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        },
        ("dump", "") => "error: dump needs a file name".to_string(),
        ("dump", path) => match shared.dump_to(Path::new(path)) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        },
        ("expect", kind) => match Kind::parse(kind) {
            Some(k) => {
                lock(&shared.gpu).rec.expect(k);
                "ok".to_string()
            }
            None => format!("error: unknown violation kind {kind:?}"),
        },
        ("status", "") => {
            let g = lock(&shared.gpu);
            let total: u64 = Kind::ALL.iter().map(|k| g.rec.count(*k)).sum();
            format!(
                "ok unexpected={} violations={total} accesses={}",
                g.rec.unexpected(),
                g.accesses
            )
        }
        ("quit", "") => return ("ok".to_string(), After::Quit),
        ("", "") => "error: empty command".to_string(),
        _ => format!("error: unknown command {line:?}"),
    };
    (reply, After::Continue)
}

fn serve_client(shared: &Arc<Shared>, stream: UnixStream) -> std::io::Result<After> {
    let mut out = stream.try_clone()?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        let (reply, after) = execute(shared, &line);
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        if after == After::Quit {
            return Ok(After::Quit);
        }
    }
    Ok(After::Continue)
}

/// Serves the control socket forever (on its own thread).
pub fn run(shared: Arc<Shared>, listener: UnixListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => match serve_client(&shared, stream) {
                Ok(After::Quit) => {
                    eprintln!("gpu-model: quit requested on the control socket");
                    shared.finish();
                    std::process::exit(0);
                }
                Ok(After::Continue) => {}
                Err(e) => eprintln!("gpu-model: control connection: {e}"),
            },
            Err(e) => eprintln!("gpu-model: control socket accept: {e}"),
        }
    }
}
