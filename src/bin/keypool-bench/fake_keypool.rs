//! A stand-in keypool for the bench's own tests, speaking only what a `contend` run sends: `STATS`,
//! `GEN <n>`, `LEASE <wait>` and `REL <id> <token>`, with first-come-first-served waiters and fencing
//! tokens as the daemon's contract has them.
//!
//! It lets the whole `contend` path (preflight, seeding, driver, handoff book, report) run over real
//! sockets before the daemon can wait for keys. It is no model of the daemon: no block timeouts, no
//! keep-alives, and every other key carries a secret so that `LEASED <id> <token> <secret>` is read too.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::target::{Id, Token};

/// The keys, who holds which under what token, and who waits, oldest first.
#[derive(Default)]
struct Pool {
    minted: usize,
    free: VecDeque<Id>,
    leases: HashMap<Id, Token>,
    waiters: VecDeque<oneshot::Sender<(Id, Token)>>,
    last_token: Token,
}

impl Pool {
    fn lease(&mut self, id: Id) -> (Id, Token) {
        self.last_token += 1;
        self.leases.insert(id, self.last_token);
        (id, self.last_token)
    }

    /// Hands a freed key to the oldest waiter still waiting, or puts it back on the free list.
    fn free(&mut self, id: Id) {
        while let Some(waiter) = self.waiters.pop_front() {
            let lease = self.lease(id);
            // A waiter whose wait ran out dropped its receiver: the key goes to the next one. (A send
            // that races the timeout could lose the key; the tests wait far longer than they run.)
            if waiter.send(lease).is_ok() {
                return;
            }
            self.leases.remove(&id);
        }
        self.free.push_back(id);
    }
}

/// Starts the stand-in on a free loopback port; it serves until the test's runtime ends.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
    let addr = listener.local_addr().expect("a bound address");
    let pool = Arc::new(Mutex::new(Pool::default()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, Arc::clone(&pool)));
        }
    });
    addr
}

/// Answers one connection's requests in order: a LEASE that waits holds back the rest.
async fn serve(stream: TcpStream, pool: Arc<Mutex<Pool>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = answer(&line, &pool).await;
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn answer(line: &str, pool: &Mutex<Pool>) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["STATS"] => {
            let keys = pool.lock().unwrap().minted;
            format!("STAT keys {keys}\r\nSTAT block_timeout_ms 60000\r\nSTAT keepalive_timeout_ms 300000\r\nEND\r\n")
        }
        ["GEN", count] => {
            let mut pool = pool.lock().unwrap();
            let mut reply = String::new();
            for _ in 0..count.parse::<usize>().unwrap() {
                let id: Id = format!("{:024}", pool.minted).into_bytes().try_into().unwrap();
                pool.minted += 1;
                pool.free.push_back(id);
                reply.push_str(&format!("KEY {}\r\n", String::from_utf8_lossy(&id)));
            }
            reply + "END\r\n"
        }
        ["LEASE", wait] => {
            let wait = Duration::from_millis(wait.strip_suffix("ms").unwrap().parse().unwrap());
            let waiting = {
                let mut pool = pool.lock().unwrap();
                match pool.free.pop_front() {
                    Some(id) => return leased(pool.lease(id)),
                    None => {
                        let (sender, receiver) = oneshot::channel();
                        pool.waiters.push_back(sender);
                        receiver
                    }
                }
            };
            match tokio::time::timeout(wait, waiting).await {
                Ok(Ok(lease)) => leased(lease),
                _ => "NOT_FOUND\r\n".into(),
            }
        }
        ["REL", id, token] => {
            let id: Id = id.as_bytes().try_into().unwrap();
            let token: Token = token.parse().unwrap();
            let mut pool = pool.lock().unwrap();
            if pool.leases.get(&id) == Some(&token) {
                pool.leases.remove(&id);
                pool.free(id);
                "RELEASED\r\n".into()
            } else {
                "STALE\r\n".into()
            }
        }
        _ => format!("ERROR unknown command '{line}'\r\n"),
    }
}

fn leased((id, token): (Id, Token)) -> String {
    let id_text = String::from_utf8_lossy(&id);
    match token % 2 {
        0 => format!("LEASED {id_text} {token} sk-secret-{token}\r\n"),
        _ => format!("LEASED {id_text} {token}\r\n"),
    }
}
