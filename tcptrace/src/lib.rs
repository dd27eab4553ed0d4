//! tcptrace: every TCP connection on this host, from the kernel's point of view.
//!
//! Data flows one way: kernel → ring buffer ([`probe`]) → [`decode`] → [`tracker`] →
//! [`detect`], [`metrics`] and [`output`]; [`daemon`] runs the loop, [`http`] says what is
//! served, [`ui`] is the web view among it, and [`web`] serves it all (TLS, auth,
//! guard limits).

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod diag;
pub mod doctor;
pub mod event;
pub mod fault;
pub mod filter;
pub mod http;
pub mod metrics;
pub mod output;
pub mod probe;
pub mod state;
#[cfg(test)]
mod testing;
pub mod timeline;
pub mod tracker;
pub mod ui;
pub mod watch;
pub mod web;
