//! tcptrace: every TCP connection on this host, from the kernel's point of view.
//!
//! Data flows one way: kernel → ring buffer ([`probe`]) → [`decode`] → [`tracker`] →
//! [`filter`] and [`output`].

pub mod cli;
pub mod clock;
pub mod decode;
pub mod diag;
pub mod event;
pub mod filter;
pub mod output;
pub mod probe;
pub mod state;
pub mod timeline;
pub mod tracker;
pub mod watch;
