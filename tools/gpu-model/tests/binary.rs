// SPDX-License-Identifier: MIT OR Apache-2.0

//! The command-line contract: run the `gpu-model` binary, talk vfio-user and
//! the control protocol to it, and check its outputs and exit codes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-model");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-model-bin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("gpu-model did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn control(path: &Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

#[test]
fn runs_reports_and_quits() {
    let d = tmpdir("run");
    let sock = d.join("gpu.sock");
    let ctl = d.join("ctl.sock");
    let report = d.join("report.json");
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut child = Command::new(BIN)
        .args([
            "--chip",
            "ad102",
            "--vram",
            "1G",
            "--bar1",
            "64M",
            "--expect",
            "bar1_fault",
        ])
        .arg("--socket")
        .arg(&sock)
        .arg("--control")
        .arg(&ctl)
        .arg("--report")
        .arg(&report)
        .arg("--dump-vram")
        .arg(d.join("vram.bin"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ctl);
    let mut client = vfio_user::Client::new(&sock).unwrap();
    assert_eq!(client.region(1).unwrap().size, 64 << 20);
    let mut b = [0u8; 4];
    client.region_read(0, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1920_00a1);
    client.region_read(1, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0);
    assert_eq!(control(&ctl, "report"), "ok");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["chip"], "ad102");
    assert_eq!(r["violation_counts"]["bar1_fault"], 1);
    assert_eq!(r["unexpected_violations"], 0);
    // SIGUSR1 rewrites the report.
    std::fs::remove_file(&report).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for(&report);
    assert_eq!(
        control(&ctl, "status"),
        "ok unexpected=0 violations=1 accesses=2"
    );
    assert_eq!(control(&ctl, "quit"), "ok");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(!sock.exists() && !ctl.exists());
    assert_eq!(
        &std::fs::read(d.join("vram.bin")).unwrap()[..8],
        b"NVMMVRAM"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("gpu-model: chip ad102") && first.contains("VRAM 1 GiB"),
        "{first}"
    );
    drop(client);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn exits_zero_when_the_client_disconnects() {
    let d = tmpdir("disconnect");
    let sock = d.join("gpu.sock");
    let report = d.join("r.json");
    let mut child = Command::new(BIN)
        .args(["--chip", "tu102", "--vram", "11G"])
        .arg("--socket")
        .arg(&sock)
        .arg("--report")
        .arg(&report)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock);
    let client = vfio_user::Client::new(&sock).unwrap();
    drop(client);
    assert_eq!(wait_exit(&mut child), 0);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["vram_bytes"], 11u64 << 30);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["--chip", "ga102"],
        vec!["--chip", "nv04", "--socket", "/nonexistent/s"],
        vec![
            "--chip",
            "tu102",
            "--socket",
            "/nonexistent/s",
            "--vram",
            "65M",
        ],
    ] {
        let s = Command::new(BIN)
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(s.code(), Some(2), "{args:?}");
    }
}
