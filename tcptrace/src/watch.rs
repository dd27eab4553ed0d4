//! `tcptrace watch`: every event, or every connection's story, live on the terminal.

use std::io::{self, Write};

use crate::{
    cli::WatchArgs,
    clock::WallClock,
    daemon::{self, Sink, Summary},
    detect::ListenOverflow,
    event::TcpEvent,
    filter::EventFilter,
    output, timeline,
    tracker::{Applied, Connection, Direction, Tracker},
};

/// Prints what `args` asks for to `out`.
struct Printer<'a> {
    args: &'a WatchArgs,
    filter: EventFilter,
    clock: WallClock,
    out: &'a mut dyn Write,
}

impl Sink for Printer<'_> {
    fn start(&mut self) -> io::Result<()> {
        if !self.args.json && !self.args.timelines {
            writeln!(self.out, "{}\n{}", output::HEADER, output::LEGEND)?;
            self.out.flush()?;
        }
        Ok(())
    }

    fn event(&mut self, _: &Tracker, event: &TcpEvent, applied: &Applied) -> io::Result<()> {
        if self.args.timelines || !self.filter.matches(event, applied.owner) {
            return Ok(());
        }
        let (clock, owner, took) = (self.clock, applied.owner, applied.time_in_old_state_ns);
        let line = if self.args.json {
            output::json_line(clock, event, applied)
        } else {
            output::human_line(clock, event, owner, took)
        };
        writeln!(self.out, "{line}")
    }

    /// With `--timelines`: the story of a connection that just finished; when its other
    /// end on this host finished already, the pair's sequence diagram too.
    fn finished(&mut self, tracker: &Tracker, conn: &Connection) -> io::Result<()> {
        if !self.args.timelines || !self.filter.matches_connection(conn) {
            return Ok(());
        }
        let partner = tracker.partner(conn);
        if self.args.json {
            return writeln!(self.out, "{}", timeline::json(conn, partner));
        }
        writeln!(self.out, "{}", timeline::human(conn))?;
        // Once per pair: with the end that finished last.
        let order = |c: &Connection| (c.state_since_ns(), c.direction == Direction::Passive);
        if let Some(partner) = partner.filter(|p| p.is_finished() && order(p) <= order(conn)) {
            let (client, server) = if conn.direction == Direction::Active {
                (conn, partner)
            } else {
                (partner, conn)
            };
            writeln!(self.out, "{}", timeline::sequence_diagram(client, server))?;
        }
        Ok(())
    }

    /// SIGUSR1: every live connection's story so far.
    fn live(&mut self, tracker: &Tracker) -> io::Result<()> {
        for conn in tracker.live().filter(|c| self.filter.matches_connection(c)) {
            let line = if self.args.json {
                timeline::json(conn, tracker.partner(conn))
            } else {
                timeline::human(conn)
            };
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    /// A namespace's listeners dropped connections on a full accept queue since the
    /// previous reconcile (its ListenOverflows counter rose). With `--timelines` too:
    /// connections that a full queue dropped never become timelines to tell it.
    fn listen_overflow(&mut self, at_ns: u64, overflow: &ListenOverflow) -> io::Result<()> {
        if !self.filter.matches_overflow(overflow) {
            return Ok(());
        }
        let line = if self.args.json {
            output::overflow_json_line(self.clock, at_ns, overflow)
        } else {
            output::overflow_human_line(self.clock, at_ns, overflow)
        };
        writeln!(self.out, "{line}")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Runs until a signal, the end of `out` (e.g. a closed pipe) or an error.
pub async fn run(args: &WatchArgs, out: &mut dyn Write) -> anyhow::Result<Summary> {
    // Before anything is loaded: a bad web config file stops the start here.
    let http = args.http_config()?;
    let mut printer = Printer {
        args,
        filter: EventFilter::new(args.pid, args.states.clone()),
        clock: WallClock::new(),
        out,
    };
    daemon::run(&args.trace.config(), http, &mut printer).await
}
