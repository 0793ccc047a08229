//! Choosing the embedding function named by `--model`.

use clap::builder::TypedValueParser;
use clap::Args;
use fewshot_core::{Crop, FaceTemplate, Recipe, Resize};
use fewshot_host::embed::{Embedder, Pixels};
use fewshot_host::nn::checkpoint::{load_matching_head, CandleEmbedder};
use fewshot_host::nn::matching::MatchingHead;
use fewshot_host::onnx_model::OnnxEmbedder;

/// Which preprocessing `--model pixels` uses.
#[derive(Debug, Clone, Copy)]
pub enum Defaults {
    /// Omniglot: 28×28 grey, area resize, strokes = 1.
    Omniglot,
    /// Faces: centre square of half the shorter side, 32×32 grey, area resize.
    Faces,
}

/// `--model` and the preprocessing flags of the pixel baseline.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Embedding function: `pixels` (the preprocessed pixels themselves), a
    /// checkpoint (`best.safetensors` with its `best.json` beside it), an
    /// exported `.onnx` model (run by the device's tract loader), a `.fsmcu`
    /// model blob (run by the core's int8 engine, as on a microcontroller), or a
    /// `.tflite` face encoder taking MobileFaceNet's input (a build with
    /// `--features tflite`).
    #[arg(long, default_value = "pixels")]
    pub model: String,
    /// Pixel baseline: output side in pixels (default 28 for Omniglot, 32 for faces).
    #[arg(long)]
    pub size: Option<usize>,
    /// Pixel baseline: output channels, 1 (grey) or 3 (RGB).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["1", "3"]).map(|s: String| if s == "3" { 3usize } else { 1 }))]
    pub channels: Option<usize>,
    /// Pixel baseline: keep the centred square of this fraction of the shorter side (1 = no crop).
    #[arg(long)]
    pub crop: Option<f32>,
    /// Pixel baseline and new encoders: align each face by its five landmarks
    /// (YuNet detector, `FEWSHOT_DETECTOR` or the data folder's) onto the
    /// ArcFace template scaled to --size, instead of a centre crop.
    #[arg(long, conflicts_with = "crop")]
    pub align: bool,
    /// Pixel baseline: resampling filter.
    #[arg(long, value_enum)]
    pub resize: Option<ResizeArg>,
    /// Pixel baseline: invert intensities (default: on for Omniglot, off for faces).
    #[arg(long)]
    pub invert: Option<bool>,
}

/// Resampling filters on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ResizeArg {
    /// Exact area averaging.
    Area,
    /// Bilinear interpolation.
    Bilinear,
}

impl ModelArgs {
    /// Builds the embedding function.
    pub fn load(&self, defaults: Defaults) -> anyhow::Result<Box<dyn Embedder>> {
        match self.model.as_str() {
            "pixels" => Ok(Box::new(Pixels {
                recipe: self.recipe(defaults)?,
            })),
            path => {
                if self.size.is_some()
                    || self.channels.is_some()
                    || self.crop.is_some()
                    || self.align
                    || self.resize.is_some()
                {
                    anyhow::bail!("--size, --channels, --crop, --align and --resize apply to --model pixels; a checkpoint records its own");
                }
                let path = std::path::Path::new(path);
                if !path.is_file() {
                    anyhow::bail!(
                        "--model {}: no such checkpoint (expected `pixels`, a .safetensors checkpoint, an .onnx export, an .fsmcu blob or a .tflite face encoder)",
                        path.display()
                    );
                }
                if path.extension().is_some_and(|e| e == "onnx") {
                    return Ok(Box::new(OnnxEmbedder::load(path)?));
                }
                if path
                    .extension()
                    .is_some_and(|e| e == fewshot_host::export::mcu::EXTENSION)
                {
                    return Ok(Box::new(fewshot_host::mcu_model::McuEmbedder::load(path)?));
                }
                if path.extension().is_some_and(|e| e == "tflite") {
                    // A face encoder from elsewhere (MobileFaceNet's input).
                    return Ok(Box::new(fewshot_host::distill::Teacher::load(path, None)?));
                }
                Ok(Box::new(CandleEmbedder::load(path)?))
            }
        }
    }

    /// The Matching Network head of a `.safetensors` checkpoint trained by
    /// `fewshot train matching` (none for any other model).
    pub fn matching_head(&self) -> anyhow::Result<Option<MatchingHead>> {
        let path = std::path::Path::new(&self.model);
        if self.model == "pixels" || path.extension().is_none_or(|e| e != "safetensors") {
            return Ok(None);
        }
        Ok(load_matching_head(path)?)
    }

    /// The meta-parameters of a `.safetensors` checkpoint trained by
    /// `fewshot train maml` (none for any other model).
    pub fn maml(&self) -> anyhow::Result<Option<fewshot_host::nn::maml::MamlModel>> {
        let path = std::path::Path::new(&self.model);
        if self.model == "pixels" || path.extension().is_none_or(|e| e != "safetensors") {
            return Ok(None);
        }
        Ok(fewshot_host::nn::checkpoint::load_maml(path)?)
    }

    /// The preprocessing of the pixel baseline (also the input of a new encoder).
    pub fn recipe(&self, defaults: Defaults) -> anyhow::Result<Recipe> {
        let base = match defaults {
            Defaults::Omniglot => Recipe::OMNIGLOT_28,
            Defaults::Faces => Recipe {
                width: 32,
                height: 32,
                channels: 1,
                crop: Crop::CenterSquare(0.5),
                resize: Resize::Area,
                invert: false,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
        };
        let size = self.size.unwrap_or(base.width);
        let recipe = Recipe {
            width: size,
            height: size,
            channels: self.channels.unwrap_or(base.channels),
            crop: match self.crop {
                None if self.align => Crop::Aligned(FaceTemplate::ARCFACE),
                None => base.crop,
                Some(1.0) => Crop::None,
                Some(f) => Crop::CenterSquare(f),
            },
            resize: match self.resize {
                None => base.resize,
                Some(ResizeArg::Area) => Resize::Area,
                Some(ResizeArg::Bilinear) => Resize::Bilinear,
            },
            invert: self.invert.unwrap_or(base.invert),
            ..base
        };
        recipe
            .validate()
            .map_err(|e| anyhow::anyhow!("pixel baseline flags: {e}"))?;
        Ok(recipe)
    }
}
