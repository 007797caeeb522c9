//! The repository ports of `idp_core::ports`, implemented for
//! [`SeaStorage`](crate::SeaStorage): one module per port.

mod audit;
mod client_states;
mod consents;
mod credentials;
mod devices;
mod identities;
mod orgs;
mod registered_clients;
mod signing_keys;
mod token_families;
mod users;
mod webhooks;

pub(crate) use users::users_with_organizations;
