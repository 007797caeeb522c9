//! The identity provider server: configuration, wiring, HTTP endpoints and
//! hosted pages, the demo relying party, and the CLI behind the `idp` binary.

pub mod app;
pub mod cli;
pub mod client_jwks;
pub mod config;
pub mod demo;
pub mod logout_channels;
pub mod notifier;
pub mod qr;
pub mod registration;
pub mod registry;
pub mod sectors;
mod theme;
pub mod web;
pub mod webhooks;
