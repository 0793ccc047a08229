//! Keys of the metadata an exported model carries (ONNX `metadata_props`),
//! shared by the exporter and the device so the two cannot drift apart.

/// The preprocessing recipe, JSON of `preprocess::RecipeSpec`.
pub const RECIPE: &str = "fewshot.recipe";
/// Embedding size, decimal.
pub const EMBEDDING_SIZE: &str = "fewshot.embedding_size";
/// Distance name (`l2`, `cosine`, `dot`).
pub const DISTANCE: &str = "fewshot.distance";
/// Input shape `[channels, height, width]`, JSON.
pub const INPUT_SHAPE: &str = "fewshot.input_shape";
/// Recommended rejection threshold, decimal (absent until calibrated).
pub const THRESHOLD: &str = "fewshot.threshold";
/// Weights format: `f32` or `int8`.
pub const WEIGHTS: &str = "fewshot.weights";
/// The training record of the checkpoint, JSON.
pub const TRAINING: &str = "fewshot.training";
/// How an int8 model was quantized (form, calibration), JSON.
pub const QUANTIZATION: &str = "fewshot.quantization";
/// How the threshold was chosen (target false-accept rate, data, rates), JSON.
pub const THRESHOLD_CALIBRATION: &str = "fewshot.threshold_calibration";
/// Thresholds for galleries of several sizes, each for a target false-accept
/// rate per stranger against the whole gallery: JSON list of objects with
/// `gallery` (people enrolled), `threshold`, `target_far`, `far`, `tar`.
pub const GALLERY_THRESHOLDS: &str = "fewshot.gallery_thresholds";
/// `true` when the embedding is the mean of the model's outputs for the input
/// and for its mirror image (two runs per face); absent or `false`: one run.
pub const FLIP_AVERAGE: &str = "fewshot.flip_average";
/// A Matching Network's head (JSON: `{"fce": {"lstm_layers", "unrolling_steps"}}` or
/// `{}`); with FCE its two graphs lie beside the model (`x.fce-support.onnx`,
/// `x.fce-query.onnx`).
pub const MATCHING: &str = "fewshot.matching";
/// What replaces a Matching model's `.onnx` extension in the file of its FCE
/// support graph (`x.onnx` → `x.fce-support.onnx`).
pub const FCE_SUPPORT_SUFFIX: &str = ".fce-support.onnx";
/// The same for its FCE query graph (`x.fce-query.onnx`).
pub const FCE_QUERY_SUFFIX: &str = ".fce-query.onnx";
