//! The soak's standing connections, beside the churn: a CLOSE_WAIT leak of a known
//! size, and a crowd of idle connections that keeps tcptrace's table over its cap.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// The longest a connect or an accept of these may take.
const STALL: Duration = Duration::from_secs(10);

/// The accepted end of a connection just made to `listener`, whose accept queue holds
/// it once connect() has returned; bounded all the same.
fn accept_within(listener: &TcpListener) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + STALL;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("no connection to accept within {STALL:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => return Err(err).context("accept"),
        }
    }
}

/// Raises this process's soft limit on open files to at least `needed` (the hard limit
/// permitting): a shell's usual 1024 would not hold the crowd.
pub(super) fn allow_open_files(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        bail!(
            "the soak holds {needed} sockets open and the hard limit on open files is {}: \
             raise it (`ulimit -Hn`)",
            limit.rlim_max
        );
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit(2) with a struct read from getrlimit, soft limit within hard.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(())
}

/// `count` connections to a listener on `port` of loopback, as (client, accepted) pairs.
fn connect_pairs(port: u16, count: usize) -> anyhow::Result<Vec<(TcpStream, TcpStream)>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    (0..count)
        .map(|_| {
            let client = TcpStream::connect_timeout(&addr, STALL)
                .with_context(|| format!("connecting to {addr}"))?;
            Ok((client, accept_within(&listener)?))
        })
        .collect()
}

/// A server that accepted connections whose clients sent a line and closed, and never
/// closes them: each stays in CLOSE_WAIT, with the line unread, until this is dropped.
pub(super) struct Leaker {
    held: Vec<TcpStream>,
}

impl Leaker {
    pub(super) fn make(port: u16, leaks: usize) -> anyhow::Result<Leaker> {
        let held = connect_pairs(port, leaks)?
            .into_iter()
            .map(|(mut client, accepted)| {
                client.write_all(b"leak\n")?;
                // The FIN: the accepted end enters CLOSE_WAIT.
                drop(client);
                Ok(accepted)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Leaker { held })
    }

    pub(super) fn count(&self) -> usize {
        self.held.len()
    }
}

/// Idle established connections, both ends held: 2 × `count` entries in tcptrace's
/// table while they last. Dropping them closes every one.
pub(super) struct Crowd {
    pairs: Vec<(TcpStream, TcpStream)>,
}

impl Crowd {
    pub(super) fn open(port: u16, count: usize) -> anyhow::Result<Crowd> {
        Ok(Crowd {
            pairs: connect_pairs(port, count)?,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }
}
