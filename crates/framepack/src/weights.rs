//! Strict weight loading: every tensor a model asks for must exist with the right shape, and
//! every stored tensor must be used. Errors name the file, tensor, expected and actual shape.
//!
//! Models are built from a [`candle_nn::VarBuilder`] as usual; [`load`] wraps the builder in a
//! checking backend and turns the first problem into a [`WeightsError`]. [`requested_shapes`]
//! walks a model constructor without any weights (shape-only tensors that allocate nothing), so
//! the names and shapes a 13B config asks for can be checked against a key list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::safetensors::{Load, MmapedSafetensors, SliceSafetensors};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::error::{Result, WeightsError};

/// A set of safetensors files (e.g. the shards of one checkpoint), memory-mapped or in memory.
pub struct WeightFiles {
    files: Vec<(PathBuf, Stored)>,
    index: HashMap<String, (usize, Vec<usize>)>,
}

/// Where a model's weights come from: safetensors paths (memory-mapped when loading), or
/// [`WeightFiles`] already opened (e.g. in memory). Every model's `load` takes one.
pub trait WeightSource {
    /// Opens the files.
    fn into_weight_files(self) -> Result<WeightFiles, WeightsError>;
}

impl WeightSource for WeightFiles {
    fn into_weight_files(self) -> Result<WeightFiles, WeightsError> {
        Ok(self)
    }
}

impl<P: AsRef<Path>> WeightSource for &[P] {
    fn into_weight_files(self) -> Result<WeightFiles, WeightsError> {
        WeightFiles::open(self)
    }
}

impl<P: AsRef<Path>, const N: usize> WeightSource for &[P; N] {
    fn into_weight_files(self) -> Result<WeightFiles, WeightsError> {
        WeightFiles::open(self)
    }
}

impl<P: AsRef<Path>> WeightSource for &Vec<P> {
    fn into_weight_files(self) -> Result<WeightFiles, WeightsError> {
        WeightFiles::open(self)
    }
}

enum Stored {
    Mapped(MmapedSafetensors),
    Static(SliceSafetensors<'static>),
}

impl Stored {
    fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Mapped(st) => st.get(name)?.load(dev),
            Self::Static(st) => st.get(name)?.load(dev),
        }
    }

    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            Self::Mapped(st) => st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect(),
            Self::Static(st) => st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect(),
        }
    }
}

impl WeightFiles {
    /// Maps the files and reads their headers; the tensor data stays on disk until used.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, WeightsError> {
        let mut stored = Vec::with_capacity(paths.len());
        for p in paths {
            let path = p.as_ref().to_path_buf();
            if let Err(source) = std::fs::metadata(&path) {
                return Err(WeightsError::Io { path, source });
            }
            // SAFETY: the file is mapped read-only; as with every mmap, it must not be truncated
            // by another process while the model is loading.
            let st = unsafe { MmapedSafetensors::new(&path) }
                .map_err(|e| WeightsError::Corrupt { path: path.clone(), reason: e.to_string() })?;
            stored.push((path, Stored::Mapped(st)));
        }
        Self::index(stored)
    }

    /// Safetensors files held in memory (e.g. compiled into the binary), each named by the path
    /// that errors show; tensors are read from the bytes in place.
    pub fn from_static(files: &[(PathBuf, &'static [u8])]) -> Result<Self, WeightsError> {
        let stored = files
            .iter()
            .map(|(path, bytes)| {
                SliceSafetensors::new(bytes)
                    .map(|st| (path.clone(), Stored::Static(st)))
                    .map_err(|e| WeightsError::Corrupt { path: path.clone(), reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::index(stored)
    }

    fn index(files: Vec<(PathBuf, Stored)>) -> Result<Self, WeightsError> {
        let mut index: HashMap<String, (usize, Vec<usize>)> = HashMap::new();
        for (file_idx, (path, st)) in files.iter().enumerate() {
            for (name, shape) in st.shapes() {
                if let Some((prev, _)) = index.get(&name) {
                    return Err(WeightsError::Duplicate { name, first: files[*prev].0.clone(), second: path.clone() });
                }
                index.insert(name, (file_idx, shape));
            }
        }
        Ok(Self { files, index })
    }

    /// Name → shape of every stored tensor.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.index.iter().map(|(k, (_, s))| (k.clone(), s.clone())).collect()
    }

    /// The files, in the order given to [`WeightFiles::open`] / [`WeightFiles::from_static`].
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }

    fn describe_files(&self) -> String {
        self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

enum Source {
    Files(std::sync::Arc<WeightFiles>),
    /// Checked against the files like `Files`, answered with shape-only tensors.
    FileShapes(std::sync::Arc<WeightFiles>),
    /// Shape-only tensors: nothing is read or allocated.
    Shapes {
        label: String,
        shapes: BTreeMap<String, Vec<usize>>,
    },
    /// Any request is answered with a shape-only tensor and recorded.
    Record,
}

struct CheckedBackend {
    source: Source,
    used: Mutex<BTreeMap<String, Vec<usize>>>,
    first_error: Mutex<Option<WeightsError>>,
}

fn shape_only(shape: &Shape, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
}

impl CheckedBackend {
    fn fail(&self, e: WeightsError) -> candle_core::Error {
        let msg = e.to_string();
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        candle_core::Error::Msg(msg)
    }

    fn lookup(&self, s: &Shape, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let expected = s.dims().to_vec();
        match &self.source {
            Source::Record => shape_only(s, dtype, dev),
            Source::Shapes { label, shapes } => match shapes.get(name) {
                None => Err(self.fail(WeightsError::Missing { name: name.into(), expected, files: label.clone() })),
                Some(actual) if *actual != expected => Err(self.fail(WeightsError::ShapeMismatch {
                    name: name.into(),
                    file: label.clone(),
                    expected,
                    actual: actual.clone(),
                })),
                Some(_) => shape_only(s, dtype, dev),
            },
            Source::Files(files) | Source::FileShapes(files) => {
                let Some((file_idx, actual)) = files.index.get(name) else {
                    return Err(self.fail(WeightsError::Missing {
                        name: name.into(),
                        expected,
                        files: files.describe_files(),
                    }));
                };
                let (path, st) = &files.files[*file_idx];
                if *actual != expected {
                    return Err(self.fail(WeightsError::ShapeMismatch {
                        name: name.into(),
                        file: path.display().to_string(),
                        expected,
                        actual: actual.clone(),
                    }));
                }
                if matches!(self.source, Source::FileShapes(_)) {
                    return shape_only(s, dtype, dev);
                }
                st.load(name, dev).and_then(|t| t.to_dtype(dtype)).map_err(|e| {
                    self.fail(WeightsError::Load {
                        name: name.into(),
                        file: path.display().to_string(),
                        reason: e.to_string(),
                    })
                })
            }
        }
    }
}

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.lookup(&s, name, dtype, dev)?;
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), s.dims().to_vec());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = match &self.source {
            Source::Files(f) | Source::FileShapes(f) => f.index.get(name).map(|(_, s)| s.clone()),
            Source::Shapes { shapes, .. } => shapes.get(name).cloned(),
            Source::Record => None,
        };
        match shape {
            Some(s) => self.get(Shape::from(s), name, candle_nn::Init::Const(0.), dtype, dev),
            None => Err(self.fail(WeightsError::Missing { name: name.into(), expected: vec![], files: self.label() })),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.source {
            Source::Files(f) | Source::FileShapes(f) => f.index.contains_key(name),
            Source::Shapes { shapes, .. } => shapes.contains_key(name),
            Source::Record => true,
        }
    }
}

impl CheckedBackend {
    fn label(&self) -> String {
        match &self.source {
            Source::Files(f) | Source::FileShapes(f) => f.describe_files(),
            Source::Shapes { label, .. } => label.clone(),
            Source::Record => "<recording>".into(),
        }
    }

    fn stored(&self) -> Option<BTreeSet<String>> {
        match &self.source {
            Source::Files(f) | Source::FileShapes(f) => Some(f.index.keys().cloned().collect()),
            Source::Shapes { shapes, .. } => Some(shapes.keys().cloned().collect()),
            Source::Record => None,
        }
    }
}

fn run<M>(
    source: Source,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<(M, BTreeMap<String, Vec<usize>>)> {
    let backend = std::sync::Arc::new(CheckedBackend {
        source,
        used: Mutex::new(BTreeMap::new()),
        first_error: Mutex::new(None),
    });
    let vb = VarBuilder::from_backend(Box::new(ArcBackend(backend.clone())), dtype, device.clone());
    let built = build(vb);
    if let Some(e) = backend.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.into());
    }
    let model = built?;
    let used = std::mem::take(&mut *backend.used.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(stored) = backend.stored() {
        let unexpected: Vec<String> = stored.into_iter().filter(|n| !used.contains_key(n)).collect();
        if !unexpected.is_empty() {
            return Err(WeightsError::Unexpected { file: backend.label(), names: unexpected }.into());
        }
    }
    Ok((model, used))
}

struct ArcBackend(std::sync::Arc<CheckedBackend>);

impl SimpleBackend for ArcBackend {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// Builds a model from safetensors files, converting every tensor to `dtype` on `device`.
///
/// Fails with a [`WeightsError`] naming the tensor if one is missing, mis-shaped or unreadable,
/// or listing the tensors the files hold that the model never asked for.
pub fn load<M>(
    files: WeightFiles,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<M> {
    run(Source::Files(std::sync::Arc::new(files)), dtype, device, build).map(|(m, _)| m)
}

/// A [`VarBuilder`] that reads tensors from the (memory-mapped) files whenever asked, for models
/// that load parts on demand (block streaming). Every name and shape is first checked against
/// `check` without reading data, with the errors of [`load`]; later reads convert to `dtype` on
/// `device` and name the file and tensor if one fails.
pub fn on_demand<M>(
    files: WeightFiles,
    dtype: DType,
    device: &Device,
    check: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<VarBuilder<'static>> {
    let files = std::sync::Arc::new(files);
    run(Source::FileShapes(files.clone()), dtype, device, check)?;
    let backend = CheckedBackend {
        source: Source::Files(files),
        used: Mutex::new(BTreeMap::new()),
        first_error: Mutex::new(None),
    };
    Ok(VarBuilder::from_backend(Box::new(ArcBackend(std::sync::Arc::new(backend))), dtype, device.clone()))
}

/// Builds a model against a name → shape list without any data (nothing is allocated), with
/// the same checks as [`load`]. `label` names the list in errors.
pub fn check_shapes<M>(
    label: &str,
    shapes: BTreeMap<String, Vec<usize>>,
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<()> {
    run(Source::Shapes { label: label.into(), shapes }, DType::F32, &Device::Cpu, build).map(|_| ())
}

/// Every tensor name and shape a model constructor asks for, without reading or allocating
/// weights.
pub fn requested_shapes<M>(
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<BTreeMap<String, Vec<usize>>> {
    run(Source::Record, DType::F32, &Device::Cpu, build).map(|(_, used)| used)
}
