//! The integration test binary: a real gateway on 127.0.0.1 port 0, real
//! WebSocket and HTTP clients.

mod helpers;

mod bench_smoke;
mod browser;
mod cluster;
mod commands;
mod console;
mod conversations;
mod events;
mod hardening;
mod lifecycle;
mod limits;
mod protocol;
mod resume;
mod routes;
mod sandbox;
mod session;
mod sms;
mod telegram;
mod upgrade;
mod webhooks;
mod whatsapp;
