//! One TCP connection to the daemon: writes requests, cuts the byte stream back into reply lines, and
//! hands each line to the [`ReplyParser`] of the request it answers.
//!
//! A batch of requests goes out in one write, and replies are read in order from one buffer, so a
//! pipeline costs one system call each way however many requests it holds. A connection remembers the
//! pool it is in and whether it sent `AUTOREL`, so the client can bring it in line with its own
//! settings before using it.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::command::Command;
use super::error::{Error, Result};
use super::reply::{Answer, ReplyParser, Step};

/// The longest reply line accepted: a lease of a key whose secret is as long as the longest request
/// line a daemon may accept (`--max-line` is at most 1 MiB), with room to spare.
const MAX_REPLY_LINE: usize = 2 << 20;

/// An open connection and its read and write buffers.
pub(super) struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    /// Bytes at the front of `input` that belong to the line last returned, dropped on the next read.
    consumed: usize,
    /// The pool the connection was moved to with `USE`; `None`: the one it started in.
    pub pool: Option<String>,
    /// Whether the connection sent `AUTOREL`.
    pub autorel: bool,
}

impl Connection {
    /// Connects to `addr` and sends `setup` (AUTH, USE, AUTOREL) in one write. Fails with the first
    /// error any of them is answered with.
    pub async fn open(addr: &str, setup: &[Command]) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        // Requests are small and each waits for its reply: Nagle would only add latency.
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            stream,
            input: BytesMut::with_capacity(4096),
            output: BytesMut::with_capacity(1024),
            consumed: 0,
            pool: None,
            autorel: false,
        };
        connection.setup(setup).await?;
        tracing::debug!(addr, "keypool client connected");
        Ok(connection)
    }

    /// Sends `setup` and records what it changed; the first refusal is the error.
    pub async fn setup(&mut self, setup: &[Command]) -> Result<()> {
        if setup.is_empty() {
            return Ok(());
        }
        for answer in self.exchange(setup).await? {
            answer?;
        }
        for command in setup {
            match command {
                Command::Use(pool) => self.pool = Some(pool.clone()),
                Command::Autorel => self.autorel = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends `commands` in one write and reads their answers in order. The outer `Err` broke the
    /// connection; an inner one is the daemon's answer to that request alone.
    pub async fn exchange(&mut self, commands: &[Command]) -> Result<Vec<Result<Answer>>> {
        for command in commands {
            command.encode(&mut self.output);
        }
        self.flush().await?;
        let mut answers = Vec::with_capacity(commands.len());
        for command in commands {
            answers.push(self.read_answer(command).await?);
        }
        Ok(answers)
    }

    /// [`Connection::exchange`] for one request, without the vector.
    pub async fn exchange_one(&mut self, command: &Command) -> Result<Result<Answer>> {
        command.encode(&mut self.output);
        self.flush().await?;
        self.read_answer(command).await
    }

    async fn flush(&mut self) -> Result<()> {
        let written = self.stream.write_all(&self.output).await;
        self.output.clear();
        Ok(written?)
    }

    async fn read_answer(&mut self, command: &Command) -> Result<Result<Answer>> {
        let mut parser = ReplyParser::new(command.expect());
        loop {
            let line = self.line().await?;
            if let Step::Complete(answer) = parser.feed(line)? {
                return Ok(answer);
            }
        }
    }

    /// The next reply line, without its line ending.
    async fn line(&mut self) -> Result<&str> {
        self.input.advance(self.consumed);
        self.consumed = 0;
        let mut searched = 0;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.input[searched..]) {
                let end = searched + at;
                self.consumed = end + 1;
                let line = &self.input[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return std::str::from_utf8(line).map_err(|_| Error::Protocol("a reply line that is not UTF-8".into()));
            }
            searched = self.input.len();
            if searched > MAX_REPLY_LINE {
                return Err(Error::Protocol(format!("a reply line longer than {MAX_REPLY_LINE} bytes")));
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                )));
            }
        }
    }
}
