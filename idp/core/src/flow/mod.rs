//! The login flow engine: a flow is a list of stages (see
//! [`crate::policy`]); each stage is one authentication method or one of
//! several. Methods are [`Step`]s, one module each under `steps/`, listed in
//! a [`StepRegistry`]; the runner owns everything else: CSRF, browser
//! binding, expiry, attempts and throttling, saving, moving on.

pub mod registry;
pub mod runner;
pub mod state;
pub mod step;

pub use registry::StepRegistry;
pub use runner::{Completion, FlowError, FlowPage, FlowRunner, Started, SubmitOutcome};
pub use state::LoginFlow;
pub use step::*;
