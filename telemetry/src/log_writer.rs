//! Log lines gathered in memory and written to standard output in chunks, rather than with one
//! `write(2)` per line (what `std::io::Stdout`, line-buffered, does). A chunk is written when
//! [`CAPACITY`] bytes are waiting, by the thread whose line filled it; otherwise a background
//! thread writes what is waiting every [`INTERVAL`], and [`flush`] writes it at once (at the
//! end of [`crate::run_service_with`] and before a panic's message).
//!
//! Each line comes in one `write` call (the `fmt` layer formats a whole event, then writes it
//! with one `write_all`) and is appended whole under a lock, so lines never interleave or get
//! cut; chunks are written in the order they were filled. A process killed without a chance to
//! flush (SIGKILL, an abort) loses at most the last [`INTERVAL`] of lines.

use std::{
    io::{self, Write},
    sync::{Mutex, MutexGuard, Once, PoisonError},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes waiting that make the next line's writer write them.
const CAPACITY: usize = 64 * 1024;

/// How long a line may wait before the background thread writes it.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The lines not written yet.
static WAITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The `MakeWriter` of buffered standard output.
#[derive(Clone, Copy, Debug)]
pub struct BufferedStdout(());

impl BufferedStdout {
    /// Starts the background thread (once) and makes a panic flush the waiting lines before its
    /// message is printed.
    pub fn new() -> io::Result<Self> {
        static START: Once = Once::new();
        let mut started = Ok(());
        START.call_once(|| {
            started = std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(INTERVAL);
                        flush();
                    }
                })
                .map(drop);
            if started.is_ok() {
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    flush();
                    previous(info);
                }));
            }
        });
        started.map(|()| Self(()))
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for BufferedStdout {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut waiting = waiting();
        if waiting.capacity() == 0 {
            waiting.reserve(CAPACITY + 1024);
        }
        waiting.extend_from_slice(line);
        if waiting.len() >= CAPACITY {
            write_out(waiting);
        }
        Ok(line.len())
    }

    /// Lines are written by size, by time and by [`flush`]; not one by one.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes every waiting line now.
pub fn flush() {
    let waiting = waiting();
    if !waiting.is_empty() {
        write_out(waiting);
    }
}

fn waiting() -> MutexGuard<'static, Vec<u8>> {
    // A panic while the lock is held cannot leave a line half appended: `extend_from_slice`
    // reserves before it copies.
    WAITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the waiting lines and writes them, letting other threads append meanwhile. Standard
/// output's own lock is taken before the waiting lines' is released, so chunks go out in order.
fn write_out(mut waiting: MutexGuard<'static, Vec<u8>>) {
    let chunk = std::mem::replace(&mut *waiting, Vec::with_capacity(CAPACITY + 1024));
    let mut stdout = io::stdout().lock();
    drop(waiting);
    // Nowhere to report a failed write of the log itself (as with the unbuffered writer).
    let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_many_threads_stay_whole_and_in_each_threads_order() {
        // Appending only (the output is the test harness's): fill the buffer from several
        // threads, then check what waits is whole lines, each thread's in its order.
        let writer = BufferedStdout(());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut writer = writer;
                    for n in 0..50 {
                        let pad = "x".repeat(n * 3);
                        let line = format!("{{\"thread\":{t},\"n\":{n},\"pad\":\"{pad}\"}}\n");
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let waiting = std::mem::take(&mut *waiting());
        let text = String::from_utf8(waiting).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = value["thread"].as_u64().unwrap() as usize;
            assert_eq!(value["n"].as_u64().unwrap() as usize, next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [50; 4]);
    }
}
