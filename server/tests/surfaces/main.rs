//! Black-box tests of the server's surfaces on real sockets (SPEC §1.1–§1.4, §1.7): a server on
//! `127.0.0.1:0`, tokio-tungstenite and an HTTP client against it.

mod auth;
mod bad_input;
mod http;
mod metrics;
mod slow;
mod stream;
mod support;
mod ws;
