//! sea-orm entities: one module per table of the schema created by
//! `idp_migrations` (the migrations own the schema; these mirror it). Each
//! converts to and from its domain type in `idp_core::domain`; stored values
//! that do not parse back give `RepoError::Corrupt`.

pub mod audit_events;
pub mod client_states;
pub mod consents;
pub mod credentials;
pub mod federated_identities;
pub mod initial_access_tokens;
pub mod known_devices;
pub mod memberships;
pub mod organizations;
pub mod refresh_tokens;
pub mod registered_clients;
pub mod signing_keys;
pub mod token_families;
pub mod users;
pub mod webhook_deliveries;
