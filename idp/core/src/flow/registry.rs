//! The registered methods, by id: what the runner runs and what flow
//! definitions are checked against ([`MethodCatalog`]).

use super::step::Step;
use crate::method::{MethodCatalog, MethodId, StepTraits};
use std::sync::Arc;

/// Every method of this build, in registration order.
#[derive(Clone, Default)]
pub struct StepRegistry {
    steps: Vec<Arc<dyn Step>>,
}

impl StepRegistry {
    /// Adds a method (a later one of the same id replaces it).
    pub fn register(&mut self, step: Arc<dyn Step>) {
        let id = step.traits().id;
        self.steps.retain(|s| s.traits().id != id);
        self.steps.push(step);
    }

    pub fn get(&self, id: &MethodId) -> Option<&Arc<dyn Step>> {
        self.steps.iter().find(|s| s.traits().id == id.as_str())
    }

    pub fn has(&self, id: &MethodId) -> bool {
        self.get(id).is_some()
    }

    /// Every method's traits, in registration order.
    pub fn all(&self) -> impl Iterator<Item = &StepTraits> {
        self.steps.iter().map(|s| s.traits())
    }
}

impl MethodCatalog for StepRegistry {
    fn traits(&self, id: &str) -> Option<&StepTraits> {
        self.steps.iter().map(|s| s.traits()).find(|t| t.id == id)
    }

    fn ids(&self) -> Vec<MethodId> {
        self.all().map(StepTraits::method).collect()
    }
}
