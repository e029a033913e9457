//! Adam and AdamW with parameter groups and a serialisable state, on burn tensors.
//!
//! burn's optimisers keep their state in burnpack records keyed by parameter ids; exact resume
//! from a safetensors checkpoint needs the state keyed by module path instead, so the update
//! rule (Kingma & Ba 2015; Loshchilov & Hutter 2019 for the decoupled decay) is written here on
//! the inner (non-autodiff) tensors. It matches `torch.optim.Adam` / `AdamW` step for step.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::NamedTensor;

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam(weight_decay=…)`):
    /// the contextual paper's P256 recipe.
    #[default]
    Adam,
    /// AdamW, decoupled weight decay: the paper's P224 recipe.
    AdamW,
}

/// Optimiser hyper-parameters. Defaults are PyTorch's (β 0.9 / 0.999, ε 1e-8) with the
/// contextual paper's weight decay 1e-4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Adam (coupled L2) or AdamW (decoupled).
    pub kind: OptimizerKind,
    /// Base learning rate (the head's). Default 1e-3 for heads on frozen features.
    pub lr: f64,
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// ε added to √v̂.
    pub eps: f64,
    /// Weight decay (coupled for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Epochs after which the learning rate is multiplied by `gamma` (MultiStepLR).
    pub milestones: Vec<usize>,
    /// Factor applied at each milestone (paper: 0.3).
    pub gamma: f64,
    /// The backbone's learning rate as a multiple of `lr` when a backbone is fine-tuned
    /// (contextual paper P256: 0.5, "backbone lr = base_lr / 2").
    pub backbone_lr_mult: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            milestones: Vec::new(),
            gamma: 0.3,
            backbone_lr_mult: 0.5,
        }
    }
}

impl OptimConfig {
    /// Learning rate at `epoch` (0-based) under the multi-step schedule.
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr * self.gamma.powi(passed as i32)
    }
}

#[derive(Debug, Clone)]
struct Moments {
    step: u64,
    m: Tensor<1>,
    v: Tensor<1>,
}

/// Adam/AdamW state for one module, keyed by parameter path.
#[derive(Debug, Clone)]
pub struct Adam {
    cfg: OptimConfig,
    state: HashMap<String, Moments>,
}

impl Adam {
    /// A fresh optimiser.
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            state: HashMap::new(),
        }
    }

    /// One update of every parameter of `module` that has a gradient in `grads`, with
    /// learning rate `lr`.
    pub fn step<M: Module>(&mut self, module: M, grads: &mut GradientsParams, lr: f64) -> M {
        let mut mapper = Stepper {
            cfg: &self.cfg,
            state: &mut self.state,
            grads,
            lr,
            path: Vec::new(),
        };
        module.map(&mut mapper)
    }

    /// The same state on `device` (a data-parallel replica's optimiser).
    pub fn to_device(&self, device: &Device) -> Self {
        let inner = device.clone().without_autodiff();
        // Moments live on the gradients' (plain) device after a step, on the autodiff device
        // after a resume; each keeps its kind.
        let target = |t: &Tensor<1>| {
            if t.device().is_autodiff() {
                device.clone()
            } else {
                inner.clone()
            }
        };
        Self {
            cfg: self.cfg.clone(),
            state: self
                .state
                .iter()
                .map(|(k, s)| {
                    let moments = Moments {
                        step: s.step,
                        m: s.m.clone().to_device(&target(&s.m)),
                        v: s.v.clone().to_device(&target(&s.v)),
                    };
                    (k.clone(), moments)
                })
                .collect(),
        }
    }

    /// The state as host tensors (`<path>.exp_avg`, `<path>.exp_avg_sq`) plus per-parameter
    /// step counts, for checkpoints.
    pub fn state_tensors(&self, prefix: &str) -> (Vec<NamedTensor>, HashMap<String, u64>) {
        let mut tensors = Vec::new();
        let mut steps = HashMap::new();
        let mut keys: Vec<&String> = self.state.keys().collect();
        keys.sort();
        for k in keys {
            let s = &self.state[k];
            for (suffix, t) in [("exp_avg", &s.m), ("exp_avg_sq", &s.v)] {
                let data = t.to_data().convert::<f32>();
                tensors.push(NamedTensor {
                    name: format!("{prefix}{k}.{suffix}"),
                    shape: data.shape().to_vec(),
                    data: data.try_into_vec::<f32>().expect("converted to f32"),
                });
            }
            steps.insert(format!("{prefix}{k}"), s.step);
        }
        (tensors, steps)
    }

    /// Restores a state written by [`Adam::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, NamedTensor>,
        steps: &HashMap<String, u64>,
        prefix: &str,
        device: &Device,
    ) -> Result<(), super::TrainError> {
        self.state.clear();
        for (key, &step) in steps.iter().filter(|(k, _)| k.starts_with(prefix)) {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("{key}.{suffix}"))
                    .map(|t| {
                        Tensor::<1>::from_data(
                            TensorData::new(t.data.clone(), [t.data.len()]),
                            device,
                        )
                    })
                    .ok_or_else(|| {
                        super::TrainError::Checkpoint(format!(
                            "optimizer state {key}.{suffix} is missing"
                        ))
                    })
            };
            let m = get("exp_avg")?;
            let v = get("exp_avg_sq")?;
            self.state
                .insert(key[prefix.len()..].to_string(), Moments { step, m, v });
        }
        Ok(())
    }
}

struct Stepper<'a> {
    cfg: &'a OptimConfig,
    state: &'a mut HashMap<String, Moments>,
    grads: &'a mut GradientsParams,
    lr: f64,
    path: Vec<String>,
}

impl ModuleMapper for Stepper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let p = tensor.inner();
        let shape = p.shape();
        let n = shape.num_elements();
        let c = self.cfg;
        let mut g = grad.reshape([n]);
        let mut p1 = p.reshape([n]);
        match c.kind {
            OptimizerKind::Adam if c.weight_decay > 0.0 => g = g + p1.clone() * c.weight_decay,
            OptimizerKind::AdamW if c.weight_decay > 0.0 => {
                p1 = p1.clone() - p1 * (self.lr * c.weight_decay)
            }
            _ => {}
        }
        let key = self.path.join(".");
        let device = g.device();
        let prev = self.state.remove(&key).unwrap_or_else(|| Moments {
            step: 0,
            m: Tensor::zeros([n], &device),
            v: Tensor::zeros([n], &device),
        });
        let step = prev.step + 1;
        let m = prev.m * c.beta1 + g.clone() * (1.0 - c.beta1);
        let v = prev.v * c.beta2 + g.clone() * g * (1.0 - c.beta2);
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        // PyTorch's form: p -= lr/bc1 · m / (√v/√bc2 + ε).
        let denom = (v.clone() / bc2).sqrt() + c.eps;
        let updated = p1 - m.clone() / denom * (self.lr / bc1);
        self.state.insert(key, Moments { step, m, v });
        let mut t = Tensor::from_inner(updated.reshape(shape));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}
