//! One client connection: read, cut into lines, answer the whole batch, write once, repeat.
//!
//! Pipelining is where a line protocol wins or loses, so each turn of the loop answers every complete
//! request already buffered under a single lock of the pool and sends all their replies with a single
//! `write_all`. Before answering, the codec shows the batch its next requests (up to 32), and the pool
//! starts loading the index buckets, free-list entries and key records they will touch, so that in a pool
//! far larger than the CPU caches their memory waits overlap (see `pool/lookahead.rs`).
//!
//! A batch stops early once its replies pass [`OUTPUT_HIGH_WATER`], is written out, and resumes from the
//! buffered input before anything more is read: one connection's huge pipeline can neither hold the lock
//! for long nor grow its output without bound.
//!
//! A request that waits for a key (`GET <wait>`, `LEASE <wait>`) also ends its batch: the replies before
//! it are written, and the connection sleeps, without the lock, until the pool grants it a key or its
//! wait runs out. Later requests stay buffered, so replies keep their order. Meanwhile the connection
//! keeps reading (up to [`WAITING_INPUT_LIMIT`]) only to notice a client that hangs up, whose wait is
//! then withdrawn.
//!
//! With `--idle-timeout`, a connection is closed once it has sent nothing for that long while the server
//! owed it nothing: the [`IdleTimer`] runs only while the loop waits to read the next request, so a
//! connection that waits for a key, or whose replies are still being written, is never idle.

use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::execute::{self, execute, Executed};
use super::one_request::poll_waiting;
use super::session::Session;
use super::state::Locked;
use super::telemetry::{Batch, Frontend, Outcome};
use super::Shared;
use crate::persist::{Fsync, Journal};
use crate::pool::Upcoming;
use crate::protocol::codec::{self, Responder, Stopped};
use crate::protocol::{reply, Request};

/// What a connection buffers before its first read, and how much room it makes before each read.
const READ_CHUNK: usize = 4096;

/// Reply bytes after which a batch pauses to write them out.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// How long replies already being written may take once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How much unanswered input a waiting connection reads ahead before it stops reading.
const WAITING_INPUT_LIMIT: usize = 64 * 1024;

/// How long a connection closed by the server (QUIT, a protocol error, shutdown) keeps draining its client's unread input, so that
/// closing does not reset the connection and destroy the error reply before the client reads it.
const DRAIN_BEFORE_CLOSE: Duration = Duration::from_millis(500);

/// How a batch ended.
enum Progress {
    /// Every complete line was answered; read more.
    NeedInput,
    /// The replies reached the high-water mark; write them and go on with the buffered input.
    OutputFull,
    /// The client sent QUIT.
    Quit,
    /// A line passed `--max-line`; the error is in the output and the connection must close.
    LineTooLong,
    /// A request waits for a key; its ticket is in the session.
    Waiting,
    /// The connection failed AUTH too often; the error is in the output and the connection must close.
    Refused,
    /// COMPACT: write the replies so far, then wait for the compaction and answer it.
    Compact,
}

/// How a wait for a key ended, for the connection.
enum WaitEnd {
    /// The reply is in the output; go on.
    Answered,
    /// The client hung up.
    ClientGone,
    /// The daemon is stopping.
    Stopping,
    /// The lease could not be logged (`--fsync always` and the disk failed).
    NotDurable,
}

/// Serves one client until it quits, disconnects, breaks the protocol, or `stop` is cancelled. On `stop`,
/// the batch in hand is still answered, but a client that does not read its replies gets only
/// [`SHUTDOWN_GRACE`] to take them: one stuck client must not keep the daemon from exiting.
pub async fn serve(mut socket: TcpStream, shared: &Arc<Shared>, stop: CancellationToken) -> io::Result<()> {
    let max_line = shared.config.max_line;
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::new();
    // One shutdown future for the connection's whole life: making a new one per read would register and
    // unregister a waiter on the token every request.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let mut session = Session::new(shared);
    let mut idle = shared.config.idle_timeout.map(IdleTimer::new);
    let mut batch = Batch::default();
    loop {
        let (progress, durable_at) =
            answer_buffered(shared, &mut session, &mut batch, &mut input, &mut output, max_line);
        batch.add_outcomes(&shared.telemetry);
        if let Some(position) = durable_at {
            if !durable(shared, position).await {
                return refuse_not_durable(socket, session, &mut output).await;
            }
        }
        if !output.is_empty() {
            tokio::select! {
                biased;
                written = socket.write_all(&output) => written?,
                () = grace_after(&stop) => return Ok(()),
            }
            output.clear();
        }
        batch.finish(&shared.telemetry);
        match progress {
            Progress::NeedInput => {}
            Progress::OutputFull => continue,
            Progress::Quit | Progress::LineTooLong | Progress::Refused => return close(socket, session).await,
            Progress::Waiting => {
                let waited_from = std::time::Instant::now();
                let command = session.waiting.as_ref().map(|waiting| waiting.command());
                match wait_for_key(&mut socket, &mut session, &mut input, &mut output, stopped.as_mut()).await? {
                    WaitEnd::Answered => {
                        if let Some(command) = command {
                            shared.telemetry.record_latency(Frontend::Tcp, command, 1, waited_from.elapsed());
                        }
                        continue;
                    }
                    WaitEnd::ClientGone => return Ok(()),
                    WaitEnd::Stopping => return close(socket, session).await,
                    WaitEnd::NotDurable => return refuse_not_durable(socket, session, &mut output).await,
                }
            }
            Progress::Compact => {
                match shared.compactor.request(shared).await {
                    Ok(Ok(())) => reply::word(&mut output, reply::words::OK),
                    Ok(Err(message)) => reply::server_error(&mut output, &format!("compaction failed: {message}")),
                    Err(_) => reply::server_error(&mut output, "compaction failed"),
                }
                continue;
            }
        }
        // Checked before reading, not only raced against the read: a client whose next request is always
        // already there would otherwise win every race and keep the daemon from stopping.
        if stop.is_cancelled() {
            return close(socket, session).await;
        }
        input.reserve(READ_CHUNK);
        // Every request so far is answered and its reply written: from here on the client is silent.
        if let Some(idle) = idle.as_mut() {
            idle.restart();
        }
        let read = tokio::select! {
            biased;
            read = socket.read_buf(&mut input) => read?,
            () = &mut stopped => return close(socket, session).await,
            () = expired(&mut idle) => {
                tracing::debug!(peer = ?socket.peer_addr().ok(), "closing a connection idle for --idle-timeout");
                return close(socket, session).await;
            }
        };
        if read == 0 {
            // The client hung up; a partial last line is dropped unanswered.
            return Ok(());
        }
    }
}

/// Answers the complete lines at the front of `input`, consuming them, with replies appended to
/// `output`. Takes the pool's lock only if there is at least one line, and then only once.
///
/// Under `--fsync always`, also returns the log position the batch's changes end at, if it made any:
/// the replies must not leave before the log is synced that far.
fn answer_buffered(
    shared: &Arc<Shared>,
    session: &mut Session<'_>,
    batch: &mut Batch,
    input: &mut BytesMut,
    output: &mut BytesMut,
    max_line: usize,
) -> (Progress, Option<u64>) {
    let journal =
        shared.persist.as_ref().map(|persist| persist.journal()).filter(|journal| journal.fsync() == Fsync::Always);
    // Framing, parsing and the replies to malformed lines are the codec's, the same code the proptest
    // and the fuzzer run; the lock is taken at the first look ahead or well-formed request, and only once.
    let lock = BatchLock { shared, journal, guard: None, logged_from: 0 };
    let mut responder = BatchResponder { shared, session, batch, lock };
    let stopped = codec::answer_lines_ahead(input, max_line, output, &mut responder);
    let BatchLock { guard: locked, logged_from, .. } = responder.lock;
    // Read before the lock goes: every record up to here is this batch's or older.
    let logged_to = journal.filter(|_| locked.is_some()).map(|journal| journal.position());
    drop(locked);
    let progress = match stopped {
        Stopped::NeedInput => Progress::NeedInput,
        Stopped::LineTooLong => Progress::LineTooLong,
        Stopped::Break(progress) => progress,
    };
    (progress, logged_to.filter(|&to| to > logged_from))
}

/// Answers one batch's requests under one lock of the pools.
struct BatchResponder<'b, 's> {
    shared: &'b Arc<Shared>,
    session: &'b mut Session<'s>,
    batch: &'b mut Batch,
    lock: BatchLock<'b>,
}

/// The batch's lock of the pools, taken when first needed and then held to the batch's end.
struct BatchLock<'b> {
    shared: &'b Shared,
    /// The log, under `--fsync always`.
    journal: Option<&'b Journal>,
    guard: Option<MutexGuard<'b, Locked>>,
    /// Where the log ended when the lock was taken.
    logged_from: u64,
}

impl BatchLock<'_> {
    fn get(&mut self) -> &mut Locked {
        self.guard.get_or_insert_with(|| {
            let guard = self.shared.lock();
            self.logged_from = self.journal.map_or(0, |journal| journal.position());
            guard
        })
    }
}

impl Responder<Progress> for BatchResponder<'_, '_> {
    fn ahead(&mut self, requests: &mut dyn Iterator<Item = Request<'_>>) {
        let mut upcoming = [Upcoming::Lease; codec::LOOKAHEAD];
        let mut foreseen = 0;
        for hint in requests.filter_map(|request| execute::upcoming(&request)).take(codec::LOOKAHEAD) {
            upcoming[foreseen] = hint;
            foreseen += 1;
        }
        // A single request has nothing to overlap its loads with.
        if foreseen > 1 {
            // The batch's time includes its look-ahead.
            self.batch.start();
            execute::look_ahead(&upcoming[..foreseen], self.lock.get(), self.shared, self.session);
        }
    }

    fn answer(&mut self, request: Request<'_>, output: &mut BytesMut) -> ControlFlow<Progress> {
        let locked = self.lock.get();
        self.batch.start();
        let command = request.command();
        if let Request::Quit = request {
            locked.count(command);
            self.batch.count(command);
            return ControlFlow::Break(Progress::Quit);
        }
        let reply_starts = output.len();
        let executed = execute(request, locked, self.shared, self.session, output);
        // A request that waits is timed and counted when its wait ends, not with this batch.
        if !matches!(executed, Executed::Waits) {
            self.batch.count_with_outcome(command, Outcome::of_reply(&output[reply_starts..]));
        }
        match executed {
            Executed::Answered if output.len() >= OUTPUT_HIGH_WATER => ControlFlow::Break(Progress::OutputFull),
            Executed::Answered => ControlFlow::Continue(()),
            Executed::Waits => ControlFlow::Break(Progress::Waiting),
            Executed::Close => ControlFlow::Break(Progress::Refused),
            Executed::Compact => ControlFlow::Break(Progress::Compact),
        }
    }
}

/// Waits, under `--fsync always`, until the log is synced up to `position`; false if the disk failed.
async fn durable(shared: &Shared, position: u64) -> bool {
    match &shared.persist {
        Some(persist) => persist.journal().wait_durable(position).await.is_ok(),
        None => true,
    }
}

/// The disk failed while replies waited for their changes to be logged: the replies are withheld, and
/// the client is told and disconnected. Those changes stay in memory and reach the log when the disk
/// recovers; the client cannot know which did, as after any lost connection.
async fn refuse_not_durable(mut socket: TcpStream, session: Session<'_>, output: &mut BytesMut) -> io::Result<()> {
    output.clear();
    reply::server_error(output, "persistence failure");
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, socket.write_all(output)).await;
    close(socket, session).await
}

/// Sleeps until the session's waiting request is granted a key or its wait runs out, then writes its
/// reply to `output`. Reads ahead meanwhile only to notice the client hanging up; on any way out other
/// than an answer, the session's `Drop` withdraws the wait.
async fn wait_for_key(
    socket: &mut TcpStream,
    session: &mut Session<'_>,
    input: &mut BytesMut,
    output: &mut BytesMut,
    mut stopped: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> io::Result<WaitEnd> {
    if session.waiting.is_none() {
        return Ok(WaitEnd::Answered);
    }
    let shared = session.shared();
    loop {
        let reading = input.len() < WAITING_INPUT_LIMIT;
        if reading {
            input.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| poll_waiting(shared, session, output, cx)) => {
                // A granted lease is a change like any other: under `--fsync always`, on disk before its reply.
                let always = shared.persist.as_ref().filter(|persist| persist.journal().fsync() == Fsync::Always);
                if let Some(persist) = always {
                    if persist.journal().wait_durable(persist.journal().position()).await.is_err() {
                        return Ok(WaitEnd::NotDurable);
                    }
                }
                return Ok(WaitEnd::Answered);
            }
            read = socket.read_buf(input), if reading => {
                if read? == 0 {
                    return Ok(WaitEnd::ClientGone);
                }
            }
            () = &mut stopped => return Ok(WaitEnd::Stopping),
        }
    }
}

/// The `--idle-timeout` clock of one connection.
///
/// Restarting it is only a clock read: the loop restarts it before every read, and re-arming a timer that
/// often would cost more than the reads. The one `Sleep` instead keeps the deadline it was last armed
/// with; when that passes, it is moved to the real deadline if the connection was heard from meanwhile.
struct IdleTimer {
    timeout: Duration,
    /// Since when the client has been silent with no reply owed to it.
    quiet_since: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(timeout: Duration) -> IdleTimer {
        IdleTimer { timeout, quiet_since: Instant::now(), sleep: Box::pin(tokio::time::sleep(timeout)) }
    }

    fn restart(&mut self) {
        self.quiet_since = Instant::now();
    }

    /// Completes once the client has been silent for the whole timeout. Cancel-safe: dropping it mid-wait
    /// loses nothing, and the next call goes on from the same deadline.
    async fn expired(&mut self) {
        loop {
            (&mut self.sleep).await;
            // Beyond the clock's range (a timeout of millions of years) it never expires.
            let Some(due) = self.quiet_since.checked_add(self.timeout) else {
                return std::future::pending().await;
            };
            if Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// [`IdleTimer::expired`], or never without a timer (no `--idle-timeout`).
async fn expired(idle: &mut Option<IdleTimer>) {
    match idle {
        Some(idle) => idle.expired().await,
        None => std::future::pending().await,
    }
}

/// Completes [`SHUTDOWN_GRACE`] after `stop` is cancelled.
async fn grace_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// Closes from the server's side, giving the session's keys back first: an AUTOREL connection's keys are
/// released the moment it is closed, not after the drain.
async fn close(socket: TcpStream, session: Session<'_>) -> io::Result<()> {
    drop(session);
    drain_and_close(socket).await
}

/// Closes from the server's side: sends FIN, then reads and discards what the client still sends for a
/// short while. Closing a socket with unread input makes the kernel answer with a reset, and a reset
/// can discard replies still on their way to the client (after QUIT, the client may already have
/// pipelined more).
async fn drain_and_close(mut socket: TcpStream) -> io::Result<()> {
    socket.shutdown().await?;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN_BEFORE_CLOSE, async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}
