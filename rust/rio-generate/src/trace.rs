//! Per-step records of a reasoning run: what mode each step ran in, the entropy signal, switches
//! and injections, and the token recorded.

/// The mode a step ran in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Latent,
    Explicit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Latent => "latent",
            Mode::Explicit => "explicit",
        }
    }
}

/// A switch that happened at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Latent → explicit (entropy fell below the block reference; Soft Thinking: `</think>`).
    ToExplicit,
    /// Explicit → latent.
    ToLatent,
}

/// One step of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    pub step: usize,
    /// The mode after this step's update (the mode the next input is fed in).
    pub mode: Mode,
    /// Natural-log entropy of the switching distribution, nats.
    pub entropy: f32,
    /// The block's reference entropy after this step (NaN where the algorithm has none).
    pub ref_entropy: f32,
    pub switched: Option<Switch>,
    /// The recorded token was forced (injection queue, Cold Stop), not chosen by the model.
    pub injected: bool,
    pub token_id: u32,
    /// Probability of the recorded token under the distribution it was chosen from.
    pub token_prob: f32,
    /// The next input is a soft embedding (not a hard token).
    pub fed_soft: bool,
}

/// The rows of one sequence, in step order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub rows: Vec<TraceRow>,
}
