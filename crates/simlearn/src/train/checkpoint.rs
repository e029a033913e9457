//! Checkpoints as safetensors files, written atomically.
//!
//! burn's own record format is burnpack; the DML world exchanges safetensors, so parameters are
//! collected by module path (`layers.0.weight`, …) with a [`ModuleVisitor`] and loaded back with
//! a [`ModuleMapper`]. Every file is written to a temporary sibling, synced and renamed, so an
//! interrupted run never leaves a half-written checkpoint behind.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use super::TrainError;

/// A named `f32` tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dotted path (`layers.0.weight`) or state key.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |e: std::io::Error| TrainError::Io(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Saves tensors (and string metadata) as one safetensors file, atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<(), TrainError> {
    let views = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck_f32(&t.data))
                .map_err(|e| {
                    TrainError::Io(format!("{}: tensor {}: {e}", path.display(), t.name))
                })?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    let bytes = safetensors::serialize(views, meta)
        .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Tensors by name, and the string metadata of a safetensors file.
pub type TensorFile = (HashMap<String, NamedTensor>, HashMap<String, String>);

/// Reads every tensor of a safetensors file as `f32` (f32, f64, f16 and bf16 are accepted),
/// with the file's metadata.
pub fn load_safetensors(path: &Path) -> Result<TensorFile, TrainError> {
    let err = |m: String| TrainError::Io(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(err(format!(
                    "tensor {name} has dtype {other:?}; expected a float type"
                )))
            }
        };
        let shape = view.shape().to_vec();
        out.insert(name.clone(), NamedTensor { name, shape, data });
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, and u8 has alignment 1; the slice
    // covers exactly the same memory. Safetensors is little-endian, as are all our targets.
    #[cfg(target_endian = "big")]
    compile_error!("safetensors checkpoints assume a little-endian target");
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

struct Collector {
    prefix: String,
    path: Vec<String>,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The on-save form is what the loader validates against (layouts may differ in memory).
        let data = param
            .transform_for_save()
            .val()
            .into_data()
            .convert::<f32>();
        let shape = data.shape().to_vec();
        let values = data.try_into_vec::<f32>().expect("converted to f32 above");
        self.out.push(NamedTensor {
            name: format!("{}{}", self.prefix, self.path.join(".")),
            shape,
            data: values,
        });
    }
}

/// Every float parameter of `module`, named `prefix + path`.
pub fn module_tensors<M: Module>(module: &M, prefix: &str) -> Vec<NamedTensor> {
    let mut c = Collector {
        prefix: prefix.to_string(),
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

struct Loader<'a> {
    prefix: &'a str,
    path: Vec<String>,
    tensors: &'a HashMap<String, NamedTensor>,
    errors: Vec<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = format!("{}{}", self.prefix, self.path.join("."));
        let expected = param.lazy_shape().to_vec();
        let Some(t) = self.tensors.get(&key) else {
            self.errors.push(format!("missing tensor {key}"));
            return param;
        };
        if t.shape != expected {
            self.errors.push(format!(
                "tensor {key} has shape {:?}, the model expects {expected:?}",
                t.shape
            ));
            return param;
        }
        let device = param.lazy_device();
        let tensor =
            Tensor::<D>::from_data(TensorData::new(t.data.clone(), t.shape.clone()), &device);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads the parameters named `prefix + path` from `tensors` into `module`.
pub fn load_module<M: Module>(
    module: M,
    tensors: &HashMap<String, NamedTensor>,
    prefix: &str,
) -> Result<M, TrainError> {
    let mut l = Loader {
        prefix,
        path: Vec::new(),
        tensors,
        errors: Vec::new(),
    };
    let module = module.map(&mut l);
    if l.errors.is_empty() {
        Ok(module)
    } else {
        Err(TrainError::Checkpoint(l.errors.join("; ")))
    }
}
