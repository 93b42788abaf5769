//! The writer of a streaming sink, with a buffer that trace lines are written straight into.
//!
//! With a probe on every instruction a run writes tens of millions of lines. A `BufWriter`
//! would take each line as a copy from wherever it was built; here the line is built in
//! the buffer itself ([`Out::room`], then [`Out::advance`]), and the buffer goes to the
//! writer when full.

use std::io::{self, Write};

/// A writer and its buffer.
pub(super) struct Out {
    writer: Box<dyn Write + Send>,
    /// [`Out::SIZE`] bytes of buffer, then [`Out::ROOM`] more so that a line started
    /// within the first `SIZE` always fits.
    buf: Box<[u8]>,
    /// Bytes buffered.
    len: usize,
}

impl Out {
    /// Bytes buffered before they go to the writer.
    const SIZE: usize = 64 * 1024;
    /// The room [`Out::room`] promises.
    pub(super) const ROOM: usize = 4096;

    pub(super) fn new(writer: Box<dyn Write + Send>) -> Self {
        Out {
            writer,
            buf: vec![0; Self::SIZE + Self::ROOM].into_boxed_slice(),
            len: 0,
        }
    }

    /// At least [`Out::ROOM`] bytes to write a line into, after those buffered (the
    /// buffer goes to the writer first when it is full); [`advance`](Self::advance) keeps
    /// what was written.
    #[inline]
    pub(super) fn room(&mut self) -> io::Result<&mut [u8]> {
        if self.len > Self::SIZE {
            self.drain()?;
        }
        Ok(&mut self.buf[self.len..])
    }

    /// Keeps `n` bytes written into [`room`](Self::room).
    #[inline]
    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Hands the buffered bytes to the writer (they are dropped if it fails).
    fn drain(&mut self) -> io::Result<()> {
        let len = std::mem::take(&mut self.len);
        self.writer.write_all(&self.buf[..len])
    }
}

impl Write for Out {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.len + bytes.len() > self.buf.len() {
            self.drain()?;
        }
        if bytes.len() > Self::SIZE {
            self.writer.write_all(bytes)?;
        } else {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.writer.flush()
    }
}

impl Drop for Out {
    /// Like `BufWriter`: what is left goes to the writer, errors ignored.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::tests::Shared;
    use super::*;

    #[test]
    fn lines_in_the_buffer_and_writes_keep_their_order() {
        let shared = Shared::default();
        let mut out = Out::new(Box::new(shared.clone()));
        let mut expected = Vec::new();
        let mut n = 0u32;
        while expected.len() < 3 * Out::SIZE {
            let line = format!("line {n}\n");
            n += 1;
            if n % 3 == 0 {
                assert!(out.write_all(line.as_bytes()).is_ok());
            } else {
                let room = out.room().unwrap_or_default();
                assert!(room.len() >= Out::ROOM);
                room[..line.len()].copy_from_slice(line.as_bytes());
                out.advance(line.len());
            }
            expected.extend_from_slice(line.as_bytes());
            if n == 1000 {
                // A write larger than the buffer goes straight through, after the buffer.
                let big = vec![b'x'; Out::SIZE + 1];
                assert!(out.write_all(&big).is_ok());
                expected.extend_from_slice(&big);
            }
        }
        assert!(shared.bytes().len() < expected.len(), "some still buffered");
        drop(out);
        assert_eq!(shared.bytes(), expected, "all written at drop, in order");
    }
}
