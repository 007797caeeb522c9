//! idp-core: everything of the identity provider that is not HTTP, SQL or Redis.
//!
//! Layers, each using only those below it (no module imports one above):
//! - foundations: domain types, errors, clock, randomness, secrets, password
//!   hashing and policies, what a method is (`method`), the flow language
//!   (`policy`), assurance levels and proofs (`assurance`);
//! - ports and stores: the repositories adapters implement (`ports`), the
//!   short-lived store and its typed stores (`ephemeral`, `throttle`,
//!   `sessions`, `flow::state`, `oidc::codes`), keys, audit and events;
//! - the login flow engine (`flow`: the runner, the `Step` trait) and the
//!   methods (`steps`, which depend on the engine, never the reverse);
//! - the services: authorization and tokens (`oidc`), accounts and
//!   organizations (`accounts`);
//! - `provider`, which assembles them.

pub mod access_token;
pub mod accounts;
pub mod assurance;
pub mod audit;
pub mod challenge;
pub mod changes;
pub mod client;
pub mod clock;
pub mod company;
pub mod domain;
pub mod ephemeral;
pub mod error;
pub mod events;
pub mod federation;
pub mod flow;
pub mod keys;
pub mod method;
pub mod notify;
pub mod oidc;
pub mod password;
pub mod password_policy;
pub mod policy;
pub mod ports;
pub mod provider;
pub mod random;
pub mod registration;
pub mod request;
pub mod secret;
pub mod sessions;
pub mod steps;
pub mod throttle;
pub mod webhooks;

pub use provider::{Provider, ProviderPorts, ProviderSettings};
