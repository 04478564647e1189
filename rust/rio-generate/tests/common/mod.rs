//! Shared by the reasoning controller tests: a controller driven step by step over hand-made
//! logits, with its own sampler and embedding table.
use rio_core::TensorRef;
use rio_generate::controller::{Controller, Decision, StepContext};
use rio_generate::sampling::Sampler;

/// One sequence's decode loop without a model: each step hands the controller the given logits,
/// records the chosen token in the sampler and moves on.
pub struct Run<C> {
    pub c: C,
    pub sampler: Sampler,
    /// The embedding table `[V, H]` soft inputs mix.
    table: Vec<f32>,
    hidden: usize,
    max_new_tokens: usize,
    step: usize,
}

impl<C: Controller> Run<C> {
    pub fn new(c: C, sampler: Sampler, table: Vec<f32>, hidden: usize, max_new_tokens: usize) -> Run<C> {
        Run { c, sampler, table, hidden, max_new_tokens, step: 0 }
    }

    pub fn step(&mut self, logits: &[f32]) -> Decision {
        let embeddings = TensorRef::from_slice(&self.table, &[self.table.len() / self.hidden, self.hidden]).unwrap();
        let cx = StepContext { step: self.step, max_new_tokens: self.max_new_tokens, logits, embeddings, sampler: &mut self.sampler };
        let d = self.c.step(cx).unwrap();
        self.sampler.record(d.token);
        self.step += 1;
        d
    }
}
