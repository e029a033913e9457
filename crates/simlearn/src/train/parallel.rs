//! Data-parallel training on several devices with cross-device negatives.
//!
//! `[train] devices = ["…", "…"]` (two or more entries) trains one replica of the model per
//! device. Each step:
//!
//! 1. The sampler draws the *global* batch (`sampler.batch_size` rows: its class balance is the
//!    global batch's) and it is split into contiguous shards, one per device in the order of
//!    `train.devices`; device `k` embeds its shard `E_k` with its replica.
//! 2. **All-gather.** Every device receives every shard's embeddings as constants and puts its
//!    own `E_k`, with its autodiff graph, back in its place: its loss batch is the whole global
//!    batch `E = [E_0; …; E_{N−1}]` in the sampler's order (PyTorch Metric Learning's
//!    `DistributedLossWrapper(efficient=False)`: each device's anchors meet every device's
//!    positives and negatives).
//! 3. Device `k` computes the loss `L(E)` of the global batch and back-propagates it: only
//!    `E_k` carries a graph, so its replica receives `∂L/∂E_k · ∂E_k/∂θ`.
//! 4. **All-reduce (sum)** of each parameter's gradient over the devices:
//!    `Σ_k ∂L/∂E_k · ∂E_k/∂θ = ∂L/∂θ`, the gradient of one device training on the concatenated
//!    batch. Every replica then takes the same optimiser step, so the replicas stay equal and
//!    the run equals single-device training on the global batch up to f32 summation order
//!    (the test `data_parallel` checks parameters after three steps to 1e-5).
//!
//! The loss is evaluated once per device on the global batch (`N ×` the loss's cost, which is
//! small against the backbone's); the forward and backward passes of the model, the expensive
//! part, are split `N` ways. Checkpoints, validation and the logged loss come from replica 0.
//!
//! **Collectives.** Two implementations of the two collective operations (all-gather of the
//! embeddings, all-reduce of the gradients), chosen by `train.collective`:
//! - `"host"` (default): through host memory, summing in device order (deterministic). It works
//!   for every backend, including the ones whose burn implementation has no collective
//!   transport: burn 0.22.1 implements `all_reduce` only in its CUDA runtime (cubecl-cuda,
//!   NCCL); burn-flex's `DistributedOps` is the trait's default (`unimplemented!`) and
//!   cubecl-wgpu has none.
//! - `"burn"`: burn's distributed context ([`burn::tensor::distributed`]): a
//!   [`DistributedContext`] over the devices, `all_reduce(Sum)` on device buffers; the
//!   all-gather is an all-reduce of zero-padded shards (burn 0.22 has no all-gather). Only for
//!   CUDA devices, where burn has the transport; it has not run on a GPU yet (no project
//!   machine has one).
//!
//! **Several nodes.** Nothing above assumes one process: a step needs exactly the two
//! collectives, on `n × d` embeddings and on each gradient. burn 0.22.1 ships no multi-node
//! collective (`burn-collective`, whose orchestrator joined nodes over websockets, stops at
//! 0.21 and does not build against 0.22); a node-spanning implementation of [`Collective`]
//! (ring all-reduce over TCP, or NCCL across nodes when burn exposes it) is the one piece to
//! add, with each node's process driving its local devices as here and the sampler seeded
//! identically on every node so that each node takes its own shards of the same global batch.
//!
//! **`train.gather = "local"`** is PML's `efficient=True` variant: device `k`'s loss is that of
//! its own anchors against the gathered batch as references
//! ([`crate::losses::ClassLoss::forward_anchors`]; pairs and mined pairs are the global
//! batch's), its own rows attached both as anchors and as references; the gradients are
//! averaged. It costs `n/N × n` pairs a device instead of `n × n`, and its gradient misses what
//! the other devices' anchors contribute to this device's rows as references, so it is not the
//! single-device gradient. For the losses that are sums over anchor rows (contrastive,
//! multi-similarity); the contextual hybrid's neighbourhoods couple every pair and need `exact`.
//!
//! Not supported: losses with trainable parameters (the proxy losses: their proxies would need
//! the same treatment as the model's parameters).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::distributed::{
    all_reduce, DistributedConfig, DistributedContext, ReduceOperation,
};

use super::{Batch, Objective, SourceBatch, TrainError, Trainee};
use crate::losses::{LossError, LossOutput};

/// How gradients and embeddings travel between devices (`train.collective`).
pub enum Collective {
    /// Through host memory, summed in device order.
    Host,
    /// burn's distributed context (CUDA devices).
    Burn(DistributedContext),
}

impl Collective {
    /// The collective named by `train.collective` for `devices` (`names`: their config names).
    pub fn new(kind: &str, devices: &[Device], names: &[String]) -> Result<Self, TrainError> {
        match kind {
            "host" => Ok(Collective::Host),
            "burn" => {
                if let Some(bad) = names.iter().find(|n| !n.starts_with("cuda")) {
                    return Err(TrainError::Config(format!(
                        "train.collective = \"burn\": burn 0.22 has a collective transport only \
                         on CUDA devices, and train.devices has \"{bad}\"; use \
                         collective = \"host\""
                    )));
                }
                let inner = devices
                    .iter()
                    .map(|d| d.clone().without_autodiff())
                    .collect();
                Ok(Collective::Burn(DistributedContext::init(
                    inner,
                    DistributedConfig {
                        all_reduce_op: ReduceOperation::Sum,
                    },
                )))
            }
            other => Err(TrainError::Config(format!(
                "train.collective: \"{other}\" is not one of \"host\", \"burn\""
            ))),
        }
    }

    /// Element-wise sum of `parts` (one tensor per device, equal shapes), returned on each
    /// part's device.
    pub fn all_reduce_sum<const D: usize>(&self, parts: Vec<Tensor<D>>) -> Vec<Tensor<D>> {
        match self {
            Collective::Host => {
                let shape = parts[0].shape();
                let devices: Vec<Device> = parts.iter().map(|t| t.device()).collect();
                let mut sum: Vec<f32> = Vec::new();
                for p in parts {
                    let v = host_values(p);
                    if sum.is_empty() {
                        sum = v;
                    } else {
                        sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
                    }
                }
                devices
                    .iter()
                    .map(|d| Tensor::from_data(TensorData::new(sum.clone(), shape.clone()), d))
                    .collect()
            }
            Collective::Burn(_) => {
                let devices: Vec<Device> = parts.iter().map(|t| t.device()).collect();
                // As burn's own gradient-sync server: launch every device's all-reduce, then
                // resolve (synchronise) each.
                let pending: Vec<_> = parts
                    .into_iter()
                    .map(|p| all_reduce(p, ReduceOperation::Sum, devices.clone()))
                    .collect();
                pending.into_iter().map(|c| c.resolve()).collect()
            }
        }
    }

    /// The whole `n × d` matrix of every device's rows (`parts[k]`: device `k`'s `n_k × d`
    /// rows, detached), as a constant on each device.
    pub fn all_gather(&self, parts: &[Tensor<2>]) -> Vec<Tensor<2>> {
        let d = parts[0].dims()[1];
        let n: usize = parts.iter().map(|p| p.dims()[0]).sum();
        match self {
            Collective::Host => {
                let mut all = Vec::with_capacity(n * d);
                for p in parts {
                    all.extend(host_values(p.clone()));
                }
                parts
                    .iter()
                    .map(|p| Tensor::from_data(TensorData::new(all.clone(), [n, d]), &p.device()))
                    .collect()
            }
            Collective::Burn(_) => {
                let mut start = 0;
                let padded = parts
                    .iter()
                    .map(|p| {
                        let rows = p.dims()[0];
                        let device = p.device();
                        let z = Tensor::<2>::zeros([n, d], &device)
                            .slice_assign([start..start + rows, 0..d], p.clone().detach());
                        start += rows;
                        z
                    })
                    .collect();
                self.all_reduce_sum(padded)
            }
        }
    }
}

fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values after convert")
}

/// Sums the gradients of `module`'s parameters over the devices, times `scale`: `grads[k]` are
/// device `k`'s (one [`GradientsParams`] per device for this parameter group); afterwards each
/// holds the result, on its own device. A parameter without a gradient on some device (unused
/// there) counts as zero.
pub(crate) fn all_reduce_module<M: Module>(
    module: &M,
    grads: &mut [GradientsParams],
    collective: &Collective,
    scale: f64,
) {
    struct Reducer<'a> {
        grads: &'a mut [GradientsParams],
        collective: &'a Collective,
        scale: f64,
    }
    impl ModuleVisitor for Reducer<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let id = param.id;
            let parts: Vec<Option<Tensor<D>>> =
                self.grads.iter_mut().map(|g| g.remove::<D>(id)).collect();
            let Some(template) = parts.iter().flatten().next().cloned() else {
                return;
            };
            let parts: Vec<Tensor<D>> = parts
                .into_iter()
                .map(|p| p.unwrap_or_else(|| template.zeros_like()))
                .collect();
            for (g, summed) in self
                .grads
                .iter_mut()
                .zip(self.collective.all_reduce_sum(parts))
            {
                let summed = if self.scale == 1.0 {
                    summed
                } else {
                    summed.mul_scalar(self.scale)
                };
                g.register(id, summed);
            }
        }
    }
    module.visit(&mut Reducer {
        grads,
        collective,
        scale,
    });
}

/// What each device's loss sees (`train.gather`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gather {
    /// Every anchor of the gathered global batch; gradients summed (equal one device's).
    Exact,
    /// The device's own anchors against the gathered batch as references (PML's
    /// `efficient=True`); gradients averaged over the devices. Cheaper loss (`n/N × n` pairs
    /// a device), but the gradient misses what other devices' anchors contribute to this
    /// device's rows as references.
    Local,
}

impl Gather {
    /// The variant named by `train.gather`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "exact" => Ok(Gather::Exact),
            "local" => Ok(Gather::Local),
            other => Err(TrainError::Config(format!(
                "train.gather: \"{other}\" is not one of \"exact\", \"local\""
            ))),
        }
    }
}

/// The replicas of a data-parallel run beyond the primary one (device 0, the loop's trainee).
pub(crate) struct DataParallel<T> {
    devices: Vec<Device>,
    collective: Collective,
    gather: Gather,
    replicas: Vec<T>,
}

impl<T: Trainee> DataParallel<T> {
    /// Replicas of `primary` (weights and optimiser state) on `devices[1..]`.
    pub(crate) fn new(
        primary: &T,
        devices: Vec<Device>,
        collective: Collective,
        gather: Gather,
    ) -> Self {
        let replicas = devices[1..].iter().map(|d| primary.fork(d)).collect();
        DataParallel {
            devices,
            collective,
            gather,
            replicas,
        }
    }

    /// The step's loss for the log: device 0's (every device computes the same global loss)
    /// under `exact`, the devices' mean under `local`. Values only, for logging.
    pub(crate) fn logged(&self, outs: &[LossOutput]) -> LossOutput {
        if self.gather == Gather::Exact {
            return outs[0].clone();
        }
        let device = outs[0].total.device().without_autodiff();
        let mean = |f: &dyn Fn(&LossOutput) -> Tensor<1>| {
            let sum: f64 = outs.iter().map(|o| f(o).into_scalar::<f64>()).sum::<f64>();
            Tensor::<1>::from_data(
                TensorData::new(vec![(sum / outs.len() as f64) as f32], [1]),
                &device,
            )
        };
        LossOutput {
            total: mean(&|o| o.total.clone().detach()),
            terms: outs[0]
                .terms
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (*name, mean(&|o| o.terms[i].1.clone().detach())))
                .collect(),
        }
    }

    /// The loss of the global batch on every device (index `k`: device `k`'s, whose graph
    /// reaches only its replica through its own shard).
    pub(crate) fn losses(
        &self,
        primary: &T,
        input: SourceBatch,
        batch: &Batch,
        kept: &[usize],
        objective: &dyn Objective,
        loss_error: &dyn Fn(LossError) -> TrainError,
    ) -> Result<Vec<LossOutput>, TrainError> {
        let shards = split(input, self.devices.len())?;
        let mut embeddings = Vec::with_capacity(shards.len());
        for (k, shard) in shards.into_iter().enumerate() {
            let replica = if k == 0 {
                primary
            } else {
                &self.replicas[k - 1]
            };
            embeddings.push(replica.forward(shard, &self.devices[k])?);
        }
        let detached: Vec<Tensor<2>> = embeddings.iter().map(|e| e.clone().detach()).collect();
        let gathered = self.collective.all_gather(&detached);
        let n = gathered[0].dims()[0];
        let mut start = 0;
        let mut outs = Vec::with_capacity(embeddings.len());
        for (own, all) in embeddings.into_iter().zip(gathered) {
            let rows = own.dims()[0];
            let mut pieces = Vec::with_capacity(3);
            if start > 0 {
                pieces.push(all.clone().slice(0..start));
            }
            pieces.push(own);
            if start + rows < n {
                pieces.push(all.slice(start + rows..n));
            }
            let global = Tensor::cat(pieces, 0);
            let out = match self.gather {
                Gather::Exact => objective.forward(global, batch, kept),
                Gather::Local => {
                    objective.forward_anchors(global, batch, kept, start..start + rows)
                }
            };
            start += rows;
            outs.push(out.map_err(|e| match e {
                LossError::Unsupported(m) => TrainError::Config(m),
                e => loss_error(e),
            })?);
        }
        Ok(outs)
    }

    /// Back-propagates each device's loss, sums the gradients over the devices and steps every
    /// replica; returns the primary.
    pub(crate) fn step(&mut self, primary: T, outs: Vec<LossOutput>, lr: f64) -> T {
        let mut per_device: Vec<Vec<GradientsParams>> = Vec::with_capacity(outs.len());
        for (k, out) in outs.into_iter().enumerate() {
            let mut grads = out.total.backward();
            let replica = if k == 0 {
                &primary
            } else {
                &self.replicas[k - 1]
            };
            per_device.push(replica.param_grads(&mut grads));
        }
        // Regroup as group → device, reduce each group with the primary's modules as the map of
        // parameters (the replicas share its parameter ids).
        let groups = per_device[0].len();
        let mut by_group: Vec<Vec<GradientsParams>> = (0..groups).map(|_| Vec::new()).collect();
        for device_grads in per_device {
            for (g, grads) in device_grads.into_iter().enumerate() {
                by_group[g].push(grads);
            }
        }
        // `exact`: each device's gradient is one part of the global loss's, so they add up;
        // `local`: each device's loss is its anchors' estimate of it, so they average.
        let scale = match self.gather {
            Gather::Exact => 1.0,
            Gather::Local => 1.0 / self.devices.len() as f64,
        };
        primary.all_reduce(&mut by_group, &self.collective, scale);
        let mut per_device: Vec<Vec<GradientsParams>> =
            (0..self.devices.len()).map(|_| Vec::new()).collect();
        for group in by_group {
            for (k, grads) in group.into_iter().enumerate() {
                per_device[k].push(grads);
            }
        }
        let mut per_device = per_device.into_iter();
        let primary = primary.apply(per_device.next().expect("device 0"), lr);
        let replicas = std::mem::take(&mut self.replicas);
        self.replicas = replicas
            .into_iter()
            .zip(per_device)
            .map(|(r, g)| r.apply(g, lr))
            .collect();
        primary
    }

    /// The replicas (devices 1…), for tests of their agreement with the primary.
    #[allow(dead_code)]
    pub(crate) fn replicas(&self) -> &[T] {
        &self.replicas
    }
}

/// Contiguous shards of a batch, as equal as `n` allows (the first `n mod parts` one row
/// longer).
fn split(input: SourceBatch, parts: usize) -> Result<Vec<SourceBatch>, TrainError> {
    let n = input.shape[0];
    if n < parts {
        return Err(TrainError::Config(format!(
            "a batch of {n} rows cannot be split over {parts} devices (train.devices)"
        )));
    }
    let row: usize = input.shape[1..].iter().product();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for k in 0..parts {
        let rows = n / parts + usize::from(k < n % parts);
        let mut shape = input.shape.clone();
        shape[0] = rows;
        out.push(SourceBatch {
            indices: input.indices[start..start + rows].to_vec(),
            data: input.data[start * row..(start + rows) * row].to_vec(),
            shape,
            stages: input.stages,
        });
        start += rows;
    }
    Ok(out)
}
