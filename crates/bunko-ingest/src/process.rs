//! Child processes with a time limit, their output read on threads (no pipe deadlock).

use crate::ExtractError;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Output {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs `cmd`, killing it after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Result<Output, ExtractError> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ExtractError::Tool(format!(
                "cannot run `{name}` ({e}); install it (Debian: poppler-utils, tesseract-ocr)"
            ))
        })?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    // stdout is read on a thread that reports when it reaches the end (the tool exited or
    // closed it): no polling delay on the quick path, a kill at the deadline otherwise.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        let _ = done_tx.send(());
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            // Bounded: a tool that floods stderr must not fill memory.
            let _ = e.take(64 * 1024).read_to_end(&mut b);
            let _ = std::io::copy(e, &mut std::io::sink());
        }
        String::from_utf8_lossy(&b).into_owned()
    });
    let deadline = Instant::now() + limit;
    let timed_out = || {
        ExtractError::Unreadable(format!(
            "`{name}` took longer than {} s on this file",
            limit.as_secs()
        ))
    };
    if done_rx.recv_timeout(limit).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(timed_out());
    }
    // stdout is closed: the tool has exited or is about to; wait for it within the limit.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(timed_out());
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => return Err(ExtractError::Tool(format!("waiting for `{name}`: {e}"))),
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}
