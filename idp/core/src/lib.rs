//! idp-core: everything of the identity provider that is not HTTP, SQL or Redis.
//!
//! The domain types, the ports (traits) the adapters implement, the short-lived
//! store contract with its in-process implementation, the OAuth 2.0 / OpenID
//! Connect protocol checks, token minting and password hashing.

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
pub mod random;
pub mod request;
pub mod secret;
pub mod sessions;
pub mod steps;
pub mod throttle;
pub mod webhooks;
